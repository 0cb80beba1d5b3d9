"""Renders one registry table with our results next to the paper's: Markdown, LaTeX and HTML.

Every cell shows, per metric: ours (mean ± sample std over seeds, x the metric's `scale`, in
its `format`), the paper's value (± its std where printed) and, for accuracy, Δ = ours − paper.
Time and throughput metrics also show their ratio to the base column of the same row, for ours and
for the paper (ours: the runs' own images/s). Below the table: the cost of each method relative to
the base column (the paper's; ours measured side by side in one process, throughput.json; ours from
the runs; and the spec's ideal), the claims (a throughput claim judged on the side-by-side
measurement), the cells that did not complete, and the table's notes.

The cell texts are built once as plain Unicode (`cell_lines`); each output format only escapes
and joins them.
"""

from __future__ import annotations

import dataclasses
import html
import pathlib
import re
import statistics

from looksam import config
from reproduce import compose
from results import claims as claims_lib
from results import collect as collect_lib

MARKERS = {"missing": "— missing", "running": "… running", "failed": "✗ failed",
           "diverged": "✗ diverged", "preempted": "… preempted (resumable)"}
RATIO_KINDS = ("time", "throughput")


# ---- numbers ---------------------------------------------------------------------------------

def _decimals(value) -> int:
    if isinstance(value, int):
        return 0
    text = repr(float(value))
    return 0 if "e" in text else len(text.split(".")[1].rstrip("0"))


def _at_least(spec: str, decimals: int) -> str:
    """`spec` with at least `decimals` digits after the point, so that a paper value is never
    shown rounded to fewer digits than it was printed with."""
    match = re.fullmatch(r"(.*\.)(\d+)([fF%])", spec)
    if not match:
        return spec
    return f"{match.group(1)}{max(int(match.group(2)), decimals)}{match.group(3)}"


def fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "n/a"
    if spec.endswith("d"):  # an integer format: a mean is a float
        value = int(round(value))
    try:
        return format(value, spec)
    except (TypeError, ValueError):  # a format the registry got wrong still shows the number
        return format(value, "g")


def paper_mean_std(value) -> tuple[float | None, float | None]:
    if isinstance(value, dict):
        return value.get("mean"), value.get("std")
    return value, None


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def fmt_ratios(ratios: list[tuple[float | None, str]]) -> str:
    shown = [f"{r:.2f}x {label}" for r, label in ratios if r is not None]
    return f" ({', '.join(shown)})" if shown else ""


def metric_spec(metric) -> str:
    return metric.format or "g"


# ---- cells -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Line:
    """One metric of one cell, as plain text."""
    label: str
    ours: str  # value(s) and/or status marker
    paper: str
    delta: str  # "" unless accuracy with both values


def ours_value(result, metric) -> float | None:
    mean = result.mean.get(metric.key) if result else None
    return None if mean is None else mean * metric.scale


def ours_text(result, metric, refs) -> str:
    """refs: (label, CellResult or None) of the columns a time/throughput value is compared to."""
    status = result.status if result else "missing"
    spec = metric_spec(metric)
    mean = ours_value(result, metric)
    text = ""
    if mean is not None:
        std = result.std.get(metric.key)
        text = fmt(mean, spec) + ("" if std is None else f" ± {fmt(std * metric.scale, spec)}")
        if metric.kind in RATIO_KINDS:
            text += fmt_ratios([(ratio(mean, ours_value(r, metric)), label) for label, r in refs])
    elif status == "completed":
        text = "n/a"  # completed, but the summary has no such value
    if status != "completed":
        marker = MARKERS.get(status, status)
        if result and len(result.seeds) > 1:
            marker += f" ({result.n_completed}/{len(result.seeds)} seeds completed)"
        text = f"{text} · {marker}" if text else marker
    return text


def paper_text(value, metric, refs) -> str:
    """refs: (label, the paper's value of that column) as in `ours_text`."""
    mean, std = paper_mean_std(value)
    if mean is None:
        return "—"
    text = fmt(mean, _at_least(metric_spec(metric), _decimals(mean)))
    if std is not None:
        text += f" ± {fmt(std, _at_least(metric_spec(metric), _decimals(std)))}"
    if metric.kind in RATIO_KINDS:
        text += fmt_ratios([(ratio(mean, paper_mean_std(v)[0]), label) for label, v in refs])
    return text


def delta_text(result, value, metric) -> str:
    ours, paper = ours_value(result, metric), paper_mean_std(value)[0]
    if metric.kind != "accuracy" or ours is None or paper is None:
        return ""
    spec = metric_spec(metric)
    return fmt(ours - paper, spec if spec.startswith(("+", "-", " ")) else "+" + spec)


def ratio_columns(table) -> list[str]:
    """The base column, then `plot: {ratio_to: <column or list>}` (ESAM prints images/s as a ratio
    to SAM's, not to SGD's)."""
    extra = table.plot.get("ratio_to") if isinstance(table.plot, dict) else None
    extra = [extra] if isinstance(extra, str) else list(extra or [])
    ids = {c["id"] for c in table.columns}
    return [c for c in dict.fromkeys([table.base_column, *extra]) if c in ids]


def _ref_cells(table, cell):
    if cell.column == table.base_column:
        return []  # the reference itself: its ratios to the others would only invert theirs
    cells = {c.id: c for c in table.cells}
    return [cells[f"{cell.row}/{c}"] for c in ratio_columns(table)
            if c != cell.column and f"{cell.row}/{c}" in cells]


def cell_lines(table, cell, results) -> list[Line]:
    refs = _ref_cells(table, cell)
    lines = []
    for i, metric in enumerate(table.metrics):
        ours_refs = [(table.label("column", r.column), results.get(r.id)) for r in refs]
        paper_refs = [(table.label("column", r.column), r.paper[i]) for r in refs]
        lines.append(Line(label=metric.label, ours=ours_text(results.get(cell.id), metric, ours_refs),
                          paper=paper_text(cell.paper[i], metric, paper_refs),
                          delta=delta_text(results.get(cell.id), cell.paper[i], metric)))
    return lines


def line_text(line: Line, with_label: bool) -> str:
    text = f"{line.ours} · paper {line.paper}"
    if line.delta:
        text += f" · Δ {line.delta}"
    return f"{line.label}: {text}" if with_label else text


def grid(table, results) -> list[tuple[str, list[list[str] | None]]]:
    """(row label, per column the cell's metric texts or None for a skipped cell) per row."""
    cells = {c.id: c for c in table.cells}
    many = len(table.metrics) > 1
    rows = []
    for row in table.rows:
        texts = []
        for column in table.columns:
            cell = cells.get(f"{row['id']}/{column['id']}")
            texts.append(None if cell is None else
                         [line_text(line, many) for line in cell_lines(table, cell, results)])
        rows.append((row["label"], texts))
    return rows


# ---- cost relative to the base column ----------------------------------------------------------

def estimator_cost(sam_config: dict | None) -> float | None:
    """The ideal cost (passes per step) of the estimator a run's resolved `sam` config builds
    (looksam.config.sam_estimator, as the trainer builds it), else None."""
    if not isinstance(sam_config, dict):
        return None
    try:
        return config.sam_estimator(sam_config).ideal_cost
    except (KeyError, ValueError, TypeError):
        return None


def ideal_cost(table, column_id: str, results) -> float | None:
    """From a completed run's summary (cost.ideal_cost, else its config), else from the estimator
    of the column's first cell's composed config (reproduce/compose.py)."""
    cells = [c for c in table.cells if c.column == column_id]
    for cell in cells:
        summaries = results[cell.id].summaries if cell.id in results else ()
        for summary in summaries:
            cost = summary.number("cost.ideal_cost")
            cost = cost if cost is not None else estimator_cost(summary.value("config.sam"))
            if cost is not None:
                return cost
    if not cells:
        return None
    try:
        return compose.estimator(cells[0]).ideal_cost
    except Exception:  # noqa: BLE001 - a cell that does not compose has no ideal cost to show
        return None


def _cost_ratio(value, base, kind: str) -> float | None:
    # Cost is step time: a time metric grows with it, a throughput metric shrinks.
    return ratio(value, base) if kind == "time" else ratio(base, value)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _median(values) -> float | None:
    return statistics.median(values) if values else None


def cost_rows(table, results) -> list[dict]:
    """Per column: the paper's, ours measured side by side (throughput.json's medians), ours from the
    runs' own images/s, and the ideal cost, each relative to the base column (mean over rows)."""
    if table.base_column is None:
        return []
    paper_metric = next(((i, m) for i, m in enumerate(table.metrics) if m.kind in RATIO_KINDS), None)
    cells = {c.id: c for c in table.cells}
    base_ideal = ideal_cost(table, table.base_column, results)
    variants = throughput_variants(results)
    rows = []
    for column in table.columns:
        paper, side_by_side, runs = [], [], []
        by_variant = {v: [] for v in variants}
        for row in table.rows:
            cell = cells.get(f"{row['id']}/{column['id']}")
            base = cells.get(f"{row['id']}/{table.base_column}")
            if cell is None or base is None:
                continue
            if paper_metric is not None:
                i, m = paper_metric
                paper.append(_cost_ratio(paper_mean_std(cell.paper[i])[0],
                                         paper_mean_std(base.paper[i])[0], m.kind))
            ours, ours_base = results.get(cell.id), results.get(base.id)
            if ours and ours_base:
                runs.append(_cost_ratio(ours.mean.get("images_per_sec"),
                                        ours_base.mean.get("images_per_sec"), "throughput")
                            or _cost_ratio(ours.mean.get("seconds_per_epoch"),
                                           ours_base.mean.get("seconds_per_epoch"), "time"))
                side_by_side.append(_cost_ratio(_median(ours.throughput), _median(ours_base.throughput),
                                                "throughput"))
                for v in variants:
                    by_variant[v].append(_cost_ratio(_median(ours.throughput_variants.get(v)),
                                                     _median(ours_base.throughput_variants.get(v)),
                                                     "throughput"))
        ideal = ideal_cost(table, column["id"], results)
        rows.append({"column": column["id"], "label": column["label"], "paper": _mean(paper),
                     "side_by_side": _mean(side_by_side),
                     **{f"variant:{v}": _mean(by_variant[v]) for v in variants},
                     "runs": _mean(runs), "ideal": ratio(ideal, base_ideal)})
    return rows


def throughput_variants(results) -> list[str]:
    return sorted({v for r in results.values() for v in r.throughput_variants})


def cost_head(results) -> list[str]:
    return (["Method", "paper", "side by side"] + [f"side by side, {v}" for v in throughput_variants(results)]
            + ["runs", "ideal (spec)"])


def cost_grid(table, results) -> list[list[str]]:
    keys = ("paper", "side_by_side", *(f"variant:{v}" for v in throughput_variants(results)), "runs", "ideal")
    return [[r["label"]] + ["—" if r[k] is None else f"{r[k]:.2f}" for k in keys]
            for r in cost_rows(table, results)]


def cost_caption(table) -> str:
    paper_metric = next((m for m in table.metrics if m.kind in RATIO_KINDS), None)
    paper = (f"the paper's from its {paper_metric.label}" if paper_metric
             else "the paper prints no time or throughput here")
    return (f"Step time relative to {table.label('column', table.base_column)} (mean over rows): "
            f"{paper}; side by side: each cell's trainer step timed in one process in alternating "
            "rounds, the ratio of the medians (throughput.json, `python -m results record "
            "--throughput`), the measurement throughput claims are judged on (a named variant, e.g. "
            "full-width: the same cells with that change, throughput-<variant>.json); runs: the training "
            "runs' own images/s (else s/epoch), made at different times and loads; ideal: the spec's "
            "forward+backward passes per step (a forward alone counts 1/3).")


# ---- claims -----------------------------------------------------------------------------------

CLAIM_HEAD = ["Claim", "Where", "Paper (lhs, rhs)", "Ours lhs", "Ours rhs", "d (ours)", "Verdict"]


def claim_expression(table, claim) -> str:
    axis = "column" if claim.axis == "column" else "row"
    lhs, rhs = table.label(axis, claim.lhs), table.label(axis, claim.rhs)
    factor = "" if claim.factor == 1.0 else f"{claim.factor:g} × "
    metric = claims_lib.metric_of(table, claim)
    tol = ("" if claim.tolerance is None
           else f" (tolerance {fmt(claim.tolerance * metric.scale, metric_spec(metric))})")
    return f"{claim.id}: {lhs} {claim.op} {factor}{rhs}{tol}"


def _ours_values(values, metric) -> str:
    if not values:
        return "missing"
    spec = metric_spec(metric)
    if metric.kind == "throughput":  # rounds of the side-by-side measurement (results/claims.py)
        return (f"{fmt(statistics.median(values) * metric.scale, spec)} (median of {len(values)} "
                "rounds, side by side)")
    mean, sd = collect_lib.mean_std(values)
    if sd is None:
        return f"{fmt(mean * metric.scale, spec)} (n=1)"
    return f"{fmt(mean * metric.scale, spec)} ± {fmt(sd * metric.scale, spec)} (n={len(values)})"


def claim_rows(table, results) -> list[list[str]]:
    """One row per claim and pair of cells, as plain text (every output format escapes it)."""
    rows = []
    for c in claims_lib.check_table(table, results):
        metric = claims_lib.metric_of(table, c.claim)
        spec = metric_spec(metric)
        other = "row" if c.claim.axis == "column" else "column"
        paper = ", ".join(fmt(None if v is None else v * metric.scale, spec) for v in c.paper)
        paper += f" ({c.paper_verdict})" if c.paper_verdict != claims_lib.HOLDS else ""
        ours = [_ours_values(v, metric) for v in c.ours]
        for i, source in enumerate(c.sources):
            if source:
                ours[i] += f" from {source}"
        d = "" if c.d is None else fmt(c.d * metric.scale, "+" + spec.lstrip("+"))
        if c.se is not None:
            d += f" ± {fmt(2 * c.se * metric.scale, spec.lstrip('+'))} (2 SE)"
        rows.append([claim_expression(table, c.claim), table.label(other, c.at), paper, *ours, d,
                     c.verdict])
    return rows


def claim_notes(table) -> list[str]:
    """Each claim's sentence, and what the table says about it."""
    lines = []
    for claim in table.claims:
        text = f"{claim.id} ({claim.section}): \u201c{' '.join(claim.quote.split())}\u201d"
        for label, extra in (("tolerance", claim.tolerance_reason), ("by design", claim.by_design),
                             ("paper", claim.paper_note)):
            if extra:
                text += f" [{label}: {' '.join(extra.split())}]"
        lines.append(text)
    return lines


CLAIMS_LEGEND = ("d = mean(ours, lhs) − factor × mean(ours, rhs) on the final test accuracy "
                 "(time: the metric itself; throughput: the medians over the rounds of the "
                 "side-by-side measurement, throughput.json, never the runs' own images/s); ± is the "
                 "sample std over seeds (ddof 1) in the Ours columns and 2 standard errors of d (over "
                 "seeds, or rounds) in the d column, and the verdict rule (results/claims.py) is d "
                 "against 2 standard errors.")


# ---- header, status and notes ------------------------------------------------------------------

def title(table) -> str:
    """The paper, the source and its title; the reading when it is not the paper's text."""
    name = table.paper_name if isinstance(table.paper_name, str) else ""
    reading = getattr(table, "reading", None)
    read_as = f" [reading `{reading.name}`: {reading.label}]" if reading else ""
    return f"{name + ', ' if name else ''}{table.source}: {table.title}{read_as}"


def status_counts(table, results) -> str:
    counts: dict[str, int] = {}
    for cell in table.cells:
        status = results[cell.id].status if cell.id in results else "missing"
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{counts[s]} {s}" for s in collect_lib.STATUSES if s in counts)


def seed_range(results) -> str:
    n = sorted({r.n_completed for r in results.values() if r.n_completed})
    return "none completed" if not n else str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}"


def header_lines(table, results, scale: str, source: str) -> list[str]:
    lines = [f"Scale: `{scale}` · source: {source} · seeds per cell: paper {table.seeds}, "
             f"ours {seed_range(results)} · cells: {status_counts(table, results) or 'none'}"]
    if scale != "paper":
        lines.append(f"At scale `{scale}` the runs are shrunk (configs/scale/{scale}.yaml: fewer epochs, "
                     "smaller models or data), so differences from the paper are expected.")
    lines.append(f"Paper hardware: {table.hardware}; paper time: {table.paper_time}.")
    refs = " and ".join(table.label("column", c) for c in ratio_columns(table))
    legend = ("Each cell: ours (mean ± sample std over seeds) · paper (± std where printed) · "
              "Δ = ours − paper for accuracy")
    if refs and any(m.kind in RATIO_KINDS for m in table.metrics):
        legend += f"; time and throughput with their ratio to {refs} in the same row"
    lines.append(legend + ".")
    return lines


def incomplete(table, results) -> list[str]:
    """One line per cell with a seed that did not complete (not for cells never started)."""
    lines = []
    for cell in table.cells:
        result = results.get(cell.id)
        if result is None or not result.seeds or result.status == "completed":
            continue
        seeds = ", ".join(f"{name} {status}" for name, status in result.seeds.items())
        messages = "; ".join(f"{name}: {m}" for name, m in result.messages.items())
        lines.append(f"{cell.id}: {seeds}" + (f" ({messages})" if messages else ""))
    return lines


# ---- Markdown ---------------------------------------------------------------------------------

def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_grid(table, results) -> list[str]:
    head = [""] + [c["label"] for c in table.columns]
    rows = [[_md(label)] + ["" if t is None else "<br>".join(_md(x) for x in t) for t in texts]
            for label, texts in grid(table, results)]
    return _md_table(head, rows)


def markdown_claims(table, results) -> list[str]:
    if not table.claims:
        return ["## Claims", "", f"None to check: {_md(table.claims_reason or '')}", ""]
    checks = claims_lib.check_table(table, results)
    lines = ["## Claims", "", f"{claims_lib.summary_line(checks)}. {CLAIMS_LEGEND}", ""]
    lines += _md_table(CLAIM_HEAD, [[_md(x) for x in row] for row in claim_rows(table, results)])
    return lines + [""] + [f"- {_md(x)}" for x in claim_notes(table)] + [""]


def markdown(table, results, scale: str, source: str, images: tuple[str, ...] = ()) -> str:
    lines = [f"# {title(table)}", ""]
    lines += [line + "  " for line in header_lines(table, results, scale, source)] + [""]
    if table.caption:
        lines += [f"> {table.caption.strip()}", ""]
    lines += [f"![{table.id}]({image})" for image in images] + ([""] if images else [])
    lines += markdown_grid(table, results) + [""]
    costs = cost_grid(table, results)
    if costs:
        lines += ["## Cost relative to the base column", "", cost_caption(table), ""]
        lines += _md_table(cost_head(results),
                           [[_md(x) for x in row] for row in costs]) + [""]
    lines += markdown_claims(table, results)
    failed = incomplete(table, results)
    if failed:
        lines += ["## Runs not completed", ""] + [f"- {_md(x)}" for x in failed] + [""]
    if table.notes:
        lines += ["## Notes", ""] + [f"- {' '.join(n.split())}" for n in table.notes] + [""]
    return "\n".join(lines)


# ---- LaTeX ------------------------------------------------------------------------------------

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "--", "—": "---", "…": r"\ldots{}",
                "✗": r"$\times$", "·": r"$\cdot$", "×": r"$\times$", "α": r"$\alpha$",
                "β": r"$\beta$", "γ": r"$\gamma$", "ρ": r"$\rho$", "ε": r"$\epsilon$", "θ": r"$\theta$"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)
    for uni, tex in _TEX_UNICODE.items():
        out = out.replace(uni, tex)
    return out


def _tex_stack(lines: list[str]) -> str:
    # A nested tabular stacks a cell's lines without extra packages.
    if len(lines) == 1:
        return lines[0]
    return r"\begin{tabular}[c]{@{}c@{}}" + r" \\ ".join(lines) + r"\end{tabular}"


def latex(table, results, scale: str) -> str:
    n = len(table.columns)
    lines = [f"% {title(table)} (ours at scale {scale})",
             r"% needs \usepackage{booktabs}",
             r"\begin{tabular}{l" + "c" * n + "}", r"\toprule",
             " & ".join([""] + [tex_escape(c["label"]) for c in table.columns]) + r" \\", r"\midrule"]
    for label, texts in grid(table, results):
        cells = ["" if t is None else _tex_stack([tex_escape(x) for x in t]) for t in texts]
        lines.append(" & ".join([tex_escape(label)] + cells) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    costs = cost_grid(table, results)
    if costs:
        lines += ["", f"% {cost_caption(table)}", r"\begin{tabular}{l" + "c" * (len(costs[0]) - 1) + "}",
                  r"\toprule", " & ".join(tex_escape(x) for x in cost_head(results)) + r" \\", r"\midrule"]
        lines += [" & ".join(tex_escape(x) for x in row) + r" \\" for row in costs]
        lines += [r"\bottomrule", r"\end{tabular}"]
    rows = claim_rows(table, results)
    if rows:
        lines += ["", "% Claims: " + CLAIMS_LEGEND, r"\begin{tabular}{lllllll}", r"\toprule",
                  " & ".join(tex_escape(h) for h in CLAIM_HEAD) + r" \\", r"\midrule"]
        lines += [" & ".join(tex_escape(x) for x in row) + r" \\" for row in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ---- HTML -------------------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"`([^`\n]+)`")

# Shared by the per-table pages and the report (results/report.py, which adds its own): a readable
# measure, bordered tables that scroll sideways when wide, figures no wider than the page.
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
  margin:0 auto;padding:0 1.5rem 4rem;max-width:72rem}
h1,h2,h3,h4{line-height:1.25;margin:1.6em 0 .5em}
h1{font-size:1.6rem}h2{font-size:1.3rem}h3{font-size:1.1rem}h4{font-size:1rem}
p,li,blockquote{max-width:48rem}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
  background:#f1f1f4;border-radius:3px;padding:0 .25em}
blockquote{margin:1em 0;padding:.2em 1em;border-left:4px solid #c8ccd4;color:#444}
.scroll{overflow-x:auto;margin:1em 0}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #b8bcc6;padding:.3em .5em;vertical-align:top;text-align:left}
thead th{background:#eef0f4}
tbody tr:nth-child(even){background:#fafbfc}
figure{margin:1em 0}
img{max-width:100%;height:auto;border:1px solid #e3e5ea}
.verdict-holds{background:#d8f0dd;color:#14532d}
.verdict-fails{background:#f9d9d6;color:#8a1c14}
.verdict-noise{background:#fcefc5;color:#684800}
.verdict-by-design{background:#e6e0f6;color:#46288c}
.verdict-missing{background:#eceef2;color:#5d6270}
span.verdict{border-radius:3px;padding:0 .3em;white-space:nowrap}
.legend{border:1px solid #d5d8de;border-radius:4px;padding:0 1em;margin:1em 0;background:#fcfcfd}
.legend li{margin:.2em 0}
"""
# The CSS class of each verdict kind (verdict_class); the 1-seed variants share their kind's.
VERDICT_CLASSES = {claims_lib.HOLDS: "holds", claims_lib.FAILS: "fails", claims_lib.NOISE: "noise",
                   claims_lib.BY_DESIGN: "by-design", claims_lib.MISSING: "missing"}
ONE_SEED = ", 1 seed"  # claims.verdict's suffix when a side has a single seed
# What each colour means (results/claims.py's rule), in the order the legend lists them.
VERDICT_LEGEND = (
    ((claims_lib.HOLDS, claims_lib.HOLDS + ONE_SEED),
     "d clears the claim's bar by 2 standard errors (>: d − 2 SE > 0; >=: d − 2 SE ≥ 0; ~: |d| + 2 SE "
     "≤ the tolerance); with one seed on a side there is no SE and the point values decide"),
    ((claims_lib.FAILS, claims_lib.FAILS + ONE_SEED),
     "the evidence contradicts the claim by 2 standard errors (> and >=: d + 2 SE < 0; ~: |d| − 2 SE "
     "> the tolerance); with one seed, on the point values"),
    ((claims_lib.NOISE,), "neither: d is within 2 standard errors of the bar"),
    ((claims_lib.BY_DESIGN,), "fails where our implementation cannot meet the claim (its by_design in "
                              "the table file says why)"),
    ((claims_lib.MISSING,), "a side has no completed seed"))
PLUS_MINUS_LEGEND = (
    "± in a claims table's “Ours lhs” and “Ours rhs” columns: the sample standard deviation over the "
    "completed seeds (ddof 1; n is their number; a single seed shows no ±). ± in its “d (ours)” "
    "column, marked (2 SE): 2 standard errors of d, SE² = s_lhs²/n_lhs + factor² × s_rhs²/n_rhs "
    "with those sample standard deviations, the margin the verdict rule holds d to (none where a "
    "side has a single seed).",
    "In the results tables, ± after ours is the sample standard deviation over seeds too (ddof 1), "
    "and after the paper's value the std the paper prints.")


def inline_html(text: str) -> str:
    """`text` escaped for HTML, with the one inline Markdown construct our texts use, `code`
    spans, as <code> (what the Markdown render shows as code)."""
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text))


def _td(cell) -> str:
    """A cell's HTML: its text, or (text, CSS class)."""
    if isinstance(cell, tuple):
        return f'<td class="{cell[1]}">{cell[0]}</td>'
    return f"<td>{cell}</td>"


def _html_table(head: list[str], rows: list[list]) -> list[str]:
    lines = ['<div class="scroll"><table>',
             "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    lines += ["<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows]
    return lines + ["</tbody>", "</table></div>"]


def verdict_class(result: str) -> str:
    """The CSS classes of a verdict as rendered ("holds, 1 seed" is coloured as holds)."""
    return f"verdict verdict-{VERDICT_CLASSES.get(claims_lib.base_verdict(result), 'other')}"


def verdict_span(text: str, result: str) -> str:
    return f'<span class="{verdict_class(result)}">{html.escape(text)}</span>'


def summary_html(checks) -> str:
    """claims.summary_line with each count in its verdict's colour."""
    counts = claims_lib.verdict_counts(checks)
    return ", ".join(verdict_span(f"{n} {v}", v) for v, n in counts) or "no claims"


def legend_html() -> list[str]:
    """What the verdict colours and the claims tables' ± mean."""
    items = [f"<li>{' / '.join(verdict_span(v, v) for v in verdicts)}: {html.escape(text)}</li>"
             for verdicts, text in VERDICT_LEGEND]
    return (['<div class="legend">', "<p>Verdicts, coloured by kind (results/claims.py, d = mean(ours, "
             "lhs) − factor × mean(ours, rhs)):</p>", "<ul>", *items, "</ul>"]
            + [f"<p>{html.escape(x)}</p>" for x in PLUS_MINUS_LEGEND] + ["</div>"])


def _html_list(items: list[str]) -> list[str]:
    return ["<ul>"] + [f"<li>{inline_html(x)}</li>" for x in items] + ["</ul>"]


def html_body(table, results, scale: str, source: str, images: tuple[str, ...] = (),
              level: int = 1, anchor: str | None = None, legend: bool = True,
              sweeps: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """The Markdown render's content as HTML elements: the title as <h`level`> (with id `anchor`),
    then the claims' verdict counts, its sections one level below; images: relative paths of the
    figure's PNGs; legend: the verdict colours' legend below the claims (a report shows it once);
    sweeps: (text, relative href) of the sweep renders over its cells."""
    e, h, sub = inline_html, f"h{level}", f"h{min(level + 1, 6)}"
    ident = f' id="{html.escape(anchor)}"' if anchor else ""
    checks = claims_lib.check_table(table, results) if table.claims else []
    lines = [f"<{h}{ident}>{e(title(table))}</{h}>",
             f'<p class="claims-summary">Claims: {summary_html(checks) if table.claims else "none to check"}'
             "</p>"]
    if sweeps:
        anchors = ", ".join(f'<a href="{html.escape(href)}">{e(text)}</a>' for text, href in sweeps)
        lines.append(f'<p class="sweeps">Sweeps over its cells (<code>python -m results sweep</code>): '
                     f"{anchors}</p>")
    lines += [f"<p>{e(line)}</p>" for line in header_lines(table, results, scale, source)]
    if table.caption:
        lines.append(f"<blockquote>{e(table.caption.strip())}</blockquote>")
    lines += [f'<figure><img src="{html.escape(image)}" alt="{html.escape(title(table))}"></figure>'
              for image in images]
    rows = [[e(label)] + ["" if t is None else "<br>".join(e(x) for x in t) for t in texts]
            for label, texts in grid(table, results)]
    lines += _html_table([""] + [e(c["label"]) for c in table.columns], rows)
    costs = cost_grid(table, results)
    if costs:
        lines += [f"<{sub}>Cost relative to the base column</{sub}>", f"<p>{e(cost_caption(table))}</p>"]
        lines += _html_table([e(x) for x in cost_head(results)],
                             [[e(x) for x in row] for row in costs])
    lines.append(f"<{sub}>Claims</{sub}>")
    if table.claims:
        lines.append(f"<p>{e(claims_lib.summary_line(checks))}. {e(CLAIMS_LEGEND)}</p>")
        lines += _html_table([e(x) for x in CLAIM_HEAD],
                             [[e(x) for x in row[:-1]] + [(e(row[-1]), verdict_class(row[-1]))]
                              for row in claim_rows(table, results)])
        lines += legend_html() if legend else []
        lines += _html_list(claim_notes(table))
    else:
        lines.append(f"<p>None to check: {e(table.claims_reason or '')}</p>")
    failed = incomplete(table, results)
    if failed:
        lines += [f"<{sub}>Runs not completed</{sub}>"] + _html_list(failed)
    if table.notes:
        lines += [f"<{sub}>Notes</{sub}>"] + _html_list([" ".join(n.split()) for n in table.notes])
    return lines


def html_document(heading: str, body: list[str]) -> str:
    head = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(heading)}</title>", f"<style>{STYLE}</style>", "</head><body>"]
    return "\n".join(head + body + ["</body></html>"]) + "\n"


def html_page(table, results, scale: str, source: str, images: tuple[str, ...] = ()) -> str:
    return html_document(title(table), html_body(table, results, scale, source, images))


# ---- files (results/__main__.py:write writes them) ---------------------------------------------

SEEDS_MARK = "<!-- completed seeds: "


class FewerSeeds(ValueError):
    """A render would replace one made from more completed seeds."""


class DrawError(ValueError):
    """A figure that could not be drawn (results/figures.py): its table, plot type and cause."""


def completed_seeds(results) -> int:
    return sum(r.n_completed for r in results.values())


def rendered_seeds(path: pathlib.Path) -> int | None:
    """The completed seeds an existing Markdown render shows (None: no render there). A render
    from before this mark counts its "N completed" cells as one seed each."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if text.startswith(SEEDS_MARK):
        return int(text[len(SEEDS_MARK):].split(" ", 1)[0])
    match = re.search(r"cells: (\d+) completed", text)
    return int(match.group(1)) if match else 0
