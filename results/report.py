"""One HTML report per runs folder and scale: every registry table and figure in one page.

    python -m results report --runs runs --scale cpu [--out DIR] [--redraw]

writes `<out>/index.html` (default out: <runs>/renders, so `--runs evidence` writes
evidence/renders/index.html). The page opens with an index of every table and figure of the
registry: each one with at least one completed run at that scale links to its section, the rest
say "not run", so the index is complete. A section holds what the per-table HTML render holds (the
table with the paper's values, cost, claims, runs not completed, notes) and, for a figure, its PNG
as an <img> with a path relative to the page. A figure's PNG is drawn into <out> (as `render`
draws it) when it is missing, older than the runs or the registry file it shows, or with --redraw.
"""

from __future__ import annotations

import html
import os
import pathlib

from reproduce import registry
from results import claims as claims_lib
from results import collect as collect_lib
from results import render

REPORT_STYLE = """
nav.index{margin:1em 0 2em}
nav.index td:first-child{white-space:nowrap}
section.report{border-top:2px solid #d5d8de;margin-top:2.5em}
section.report>h2{position:sticky;top:0;background:#fff;margin:0;padding:.6em 0 .4em;z-index:1;
  border-bottom:1px solid #e3e5ea}
a.top{font-size:.85rem}
tr.not-run td{color:#777}
"""
RUN_FILES = ("summary.json", "events.out.tfevents*", "landscape*.npz")


def completed_cells(results) -> int:
    return sum(1 for r in results.values() if r.n_completed)


def _newest_input(table, runs, scale, tables_dir) -> float:
    """The newest modification time among what a figure of `table` shows: its registry file and
    its runs' summaries, event files and landscapes (and those of a points_from table)."""
    tables = [table.id]
    spec = table.plot.get("points_from") if isinstance(table.plot, dict) else None
    if isinstance(spec, dict) and spec.get("table"):
        tables.append(str(spec["table"]))
    times = []
    for table_id in tables:
        yaml_path = pathlib.Path(tables_dir) / f"{table_id}.yaml"
        if yaml_path.is_file():
            times.append(yaml_path.stat().st_mtime)
        scale_dir = registry.scale_dir(runs, table_id, scale, table.reading_name)
        for pattern in RUN_FILES:
            times += [p.stat().st_mtime for p in scale_dir.rglob(pattern) if p.is_file()]
    return max(times, default=0.0)


def figure_png(table, results, runs, scale, out, tables_dir, redraw: bool = False) -> pathlib.Path:
    """`<out>/<id>_<scale>.png`, drawn unless an up-to-date one is there."""
    from results import figures

    png = pathlib.Path(out) / f"{registry.render_stem(table.id, scale, table.reading_name)}.png"
    stale = redraw or not png.is_file() or png.stat().st_mtime < _newest_input(table, runs, scale, tables_dir)
    if stale:
        figures.draw(table, results, png.with_suffix(""), runs_dir=runs, scale=scale,
                     tables_dir=tables_dir, results_for=lambda t: collect_lib.collect(t, runs, scale))
    return png


def _index_row(table, results, ran: bool) -> str:
    e = render.inline_html
    name = html.escape(table.id)
    kind = table.kind + (f" ({table.plot.get('type', 'bars')})" if table.kind == "figure" else "")
    what = f"{e(table.paper_name)}, {e(table.source)}: {e(table.title)}"
    if not ran:
        return (f'<tr class="not-run" data-table="{name}"><td>{name}</td><td>{html.escape(kind)}</td>'
                f"<td>{what}</td><td>not run</td><td>—</td></tr>")
    claims = (claims_lib.summary_line(claims_lib.check_table(table, results)) if table.claims
              else "none to check")
    cells = f"{completed_cells(results)} of {len(table.cells)} completed"
    return (f'<tr data-table="{name}"><td><a href="#{name}">{name}</a></td><td>{html.escape(kind)}</td>'
            f"<td>{what}</td><td>{cells}</td><td>{e(claims)}</td></tr>")


def build(runs, scale: str, out=None, tables_dir=registry.TABLES_DIR, source: str | None = None,
          redraw: bool = False, reading: str | None = None) -> pathlib.Path:
    """Writes `<out>/index.html` (figures' PNGs beside it); returns its path. A reading other than
    the paper's: `<out>/index_<reading>.html`, of the tables that declare it."""
    runs = pathlib.Path(runs)
    out = pathlib.Path(out) if out is not None else registry.renders_dir(runs)
    out.mkdir(parents=True, exist_ok=True)
    source = source or f"`{runs}`"
    rows, sections, n_ran = [], [], 0
    tables = list(registry.all_tables(pathlib.Path(tables_dir)).values())
    if reading not in (None, registry.PAPER):
        tables = [registry.load(t.id, pathlib.Path(tables_dir), reading=reading) for t in tables
                  if reading in t.reading_names()]
        if not tables:
            raise ValueError(f"no table declares the reading {reading!r}")
    for table in tables:
        results = collect_lib.collect(table, runs, scale)
        ran = completed_cells(results) > 0
        rows.append(_index_row(table, results, ran))
        if not ran:
            continue
        n_ran += 1
        images: tuple[str, ...] = ()
        if table.kind == "figure":
            png = figure_png(table, results, runs, scale, out, tables_dir, redraw)
            images = (pathlib.Path(os.path.relpath(png, out)).as_posix(),)
        sections.append(f'<section class="report" data-table="{html.escape(table.id)}">')
        sections += render.html_body(table, results, scale, source, images, level=2, anchor=table.id)
        sections += ['<p><a class="top" href="#index">Back to the index</a></p>', "</section>"]
    read_as = tables[0].reading if reading not in (None, registry.PAPER) else None
    heading = f"Results at scale {scale}" + (f", reading {read_as.name} ({read_as.label})" if read_as else "")
    body = [f"<h1>{html.escape(heading)}</h1>",
            f"<p>Runs: {render.inline_html(source)} · scale: <code>{html.escape(scale)}</code> · "
            f"{n_ran} of {len(rows)} registry tables and figures have a completed run. Each cell "
            "shows ours (mean ± sample std over seeds) next to the paper's value; claims are "
            "checked by results/claims.py.</p>",
            '<nav class="index" id="index"><h2>Index</h2>']
    head = "".join(f"<th>{h}</th>" for h in ("Id", "Kind", "Paper, source: title", "Cells", "Claims"))
    body += ['<div class="scroll"><table>', f"<thead><tr>{head}</tr></thead>", "<tbody>", *rows,
             "</tbody>", "</table></div>", "</nav>", *sections]
    page = render.html_document(heading, body).replace("</style>", REPORT_STYLE + "</style>", 1)
    path = out / ("index.html" if reading in (None, registry.PAPER) else f"index_{reading}.html")
    path.write_text(page)
    return path
