"""The table model every writer renders, and the tables of one registry table built on it.

A `Table` is a head and rows of `Cell`s; a cell holds one or more lines of plain Unicode text in
which `code` spans are the only markup, and may carry a verdict kind (claims: its colour in HTML).
results/writers.py writes a Table in Markdown, LaTeX and HTML; results/render.py builds a registry
table's page from the three tables made here (the paper's grid, the cost relative to the base
column, the claims), results/sweep.py its grid of sweep points and results/report.py its index.

The paper's grid: every cell shows, per metric, ours (mean ± sample std over seeds, x the
metric's `scale`, in its `format`), the paper's value (± its std where printed) and, for accuracy,
Δ = ours − paper. Time and throughput metrics also show their ratio to the base column of the same
row, for ours and for the paper (ours: the runs' own images/s). The cost table: each method
relative to the base column (the paper's; ours measured side by side in one process,
throughput.json; ours from the runs; and the spec's ideal). The claims table: one row per claim and
pair of cells (a throughput claim judged on the side-by-side measurement).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Sequence

from looksam import config
from reproduce import compose
from results import claims as claims_lib
from results import collect as collect_lib

# ---- the model -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cell:
    """One table cell: its lines (plain text, `code` spans allowed), a verdict kind for its
    colour (VERDICT_KINDS' values), and a link target (HTML)."""
    lines: tuple[str, ...] = ()
    kind: str | None = None
    href: str | None = None

    @classmethod
    def of(cls, text: str | Sequence[str] | None, **kw) -> Cell:
        if text is None:
            return cls(**kw)
        return cls(lines=(text,) if isinstance(text, str) else tuple(text), **kw)


@dataclasses.dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    kind: str | None = None  # "not-run": a report index row without runs
    key: str | None = None  # what the row stands for (a table id): data-table in HTML


@dataclasses.dataclass(frozen=True)
class Table:
    head: tuple[str, ...]
    rows: tuple[Row, ...]

    @classmethod
    def of(cls, head: Sequence[str], rows: Sequence[Sequence]) -> Table:
        """From plain rows: each entry a Cell, a text, a list of lines or None (an empty cell)."""
        return cls(tuple(head), tuple(Row(tuple(c if isinstance(c, Cell) else Cell.of(c) for c in row))
                                      for row in rows))


# The verdict kind of each verdict (claims.base_verdict strips ", 1 seed"); writers colour by kind.
VERDICT_KINDS = {claims_lib.HOLDS: "holds", claims_lib.FAILS: "fails", claims_lib.NOISE: "noise",
                 claims_lib.BY_DESIGN: "by-design", claims_lib.MISSING: "missing"}


def verdict_kind(verdict: str) -> str:
    return VERDICT_KINDS.get(claims_lib.base_verdict(verdict), "other")


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


def claim_rows(table, results, checks=None) -> list[list[str]]:
    """One row per claim and pair of cells, as plain text (every output format escapes it);
    checks: claims.check_table's, where the caller has them already."""
    rows = []
    for c in claims_lib.check_table(table, results) if checks is None else checks:
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


# ---- the tables of a registry table ------------------------------------------------------------

def paper_table(table, results) -> Table:
    """Rows by columns, each cell its metrics' lines (`grid`); a cell the table skips is empty."""
    return Table.of([""] + [c["label"] for c in table.columns],
                    [[label, *texts] for label, texts in grid(table, results)])


def cost_table(table, results) -> Table | None:
    rows = cost_grid(table, results)
    return Table.of(cost_head(results), rows) if rows else None


def claims_table(table, results, checks=None) -> Table:
    rows = claim_rows(table, results, checks)
    return Table(tuple(CLAIM_HEAD), tuple(
        Row(tuple(Cell.of(x) for x in row[:-1]) + (Cell.of(row[-1], kind=verdict_kind(row[-1])),))
        for row in rows))
