"""A registry table's page in each format: Markdown, LaTeX and HTML, from the three tables of
results/tables.py (the paper's grid, the cost relative to the base column, the claims) through
results/writers.py, with the header above them and the runs not completed and the table's notes
below. results/__main__.py:write writes them, without replacing a render of more seeds.
"""

from __future__ import annotations

import pathlib
import re
import types

from results import claims as claims_lib
from results import tables, writers
from results.tables import CLAIMS_LEGEND, claim_notes, cost_caption, header_lines, incomplete, title

# ---- Markdown ---------------------------------------------------------------------------------


def _bullets(items) -> list[str]:
    return [f"- {writers._md(x)}" for x in items]


def markdown(table, results, scale: str, source: str, images: tuple[str, ...] = ()) -> str:
    lines = [f"# {title(table)}", ""]
    lines += [line + "  " for line in header_lines(table, results, scale, source)] + [""]
    if table.caption:
        lines += [f"> {table.caption.strip()}", ""]
    lines += [f"![{table.id}]({image})" for image in images] + ([""] if images else [])
    lines += writers.markdown_table(tables.paper_table(table, results)) + [""]
    cost = tables.cost_table(table, results)
    if cost:
        lines += ["## Cost relative to the base column", "", cost_caption(table), ""]
        lines += writers.markdown_table(cost) + [""]
    lines += ["## Claims", ""]
    if table.claims:
        checks = claims_lib.check_table(table, results)
        lines += [f"{claims_lib.summary_line(checks)}. {CLAIMS_LEGEND}", ""]
        lines += writers.markdown_table(tables.claims_table(table, results, checks)) + [""]
        lines += _bullets(claim_notes(table)) + [""]
    else:
        lines += [f"None to check: {writers._md(table.claims_reason or '')}", ""]
    failed = incomplete(table, results)
    if failed:
        lines += ["## Runs not completed", ""] + _bullets(failed) + [""]
    if table.notes:
        lines += ["## Notes", ""] + [f"- {' '.join(n.split())}" for n in table.notes] + [""]
    return "\n".join(lines)


# ---- LaTeX ------------------------------------------------------------------------------------

def latex(table, results, scale: str) -> str:
    lines = [f"% {title(table)} (ours at scale {scale})", r"% needs \usepackage{booktabs}"]
    lines += writers.latex_table(tables.paper_table(table, results), "l" + "c" * len(table.columns))
    cost = tables.cost_table(table, results)
    if cost:
        lines += ["", f"% {cost_caption(table)}"]
        lines += writers.latex_table(cost, "l" + "c" * (len(cost.head) - 1))
    claims = tables.claims_table(table, results)
    if claims.rows:
        lines += ["", "% Claims: " + CLAIMS_LEGEND]
        lines += writers.latex_table(claims, "l" * len(claims.head))
    return "\n".join(lines) + "\n"


# ---- HTML -------------------------------------------------------------------------------------

def section(table, results, scale: str, source: str, images: tuple[str, ...] = (), level: int = 1,
            anchor: str | None = None, legend: bool = True, sweeps: tuple[tuple[str, str], ...] = (),
            error: str | None = None) -> types.SimpleNamespace:
    """What templates/macros.html.j2's `section` shows of a table: the title as <h`level`> (with
    id `anchor`), its claims' verdict counts, then what the Markdown render holds; images: relative
    paths of the figure's PNGs; legend: the verdict colours' legend below the claims (a report
    shows it once); sweeps: (text, relative href) of the sweep renders over its cells."""
    checks = claims_lib.check_table(table, results) if table.claims else []
    cost = tables.cost_table(table, results)
    return types.SimpleNamespace(
        title=title(table), level=level, anchor=anchor, error=error, images=images, sweeps=sweeps,
        claims=bool(table.claims), counts=claims_lib.verdict_counts(checks),
        header=header_lines(table, results, scale, source), caption=(table.caption or "").strip(),
        grid=tables.paper_table(table, results), cost=cost, cost_caption=cost_caption(table) if cost else "",
        claims_line=f"{claims_lib.summary_line(checks)}. {CLAIMS_LEGEND}" if table.claims else "",
        claims_table=tables.claims_table(table, results, checks) if table.claims else None,
        legend=legend, claim_notes=claim_notes(table), claims_reason=table.claims_reason or "",
        incomplete=incomplete(table, results), notes=[" ".join(n.split()) for n in table.notes])


def html_page(table, results, scale: str, source: str, images: tuple[str, ...] = ()) -> str:
    return writers.html_document("table_page.html.j2", title(table),
                                 s=section(table, results, scale, source, images))


# ---- files (results/__main__.py:write writes them) ---------------------------------------------

SEEDS_MARK = "<!-- completed seeds: "


class FewerSeeds(ValueError):
    """A render would replace one made from more completed seeds."""


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
