"""One HTML report per runs folder and scale: every registry table and figure in one page.

    python -m results report --runs runs --scale cpu [--out DIR] [--redraw]

writes `<out>/index.html` (default out: <runs>/renders, so `--runs evidence` writes
evidence/renders/index.html). The page opens with an index of every table and figure of the
registry: each one with at least one completed run at that scale links to its section, the rest
say "not run" with the commands that make their runs, so the index is complete; a legend says what
the verdict colours and the claims tables' ± mean. A section opens with its claims' verdict counts
and links to the sweeps rendered over its cells (<out>/sweeps/<table>_<scale>_<row>_<column>/,
`python -m results sweep --out`), then holds what the per-table HTML render holds (the table with
the paper's values, cost, claims, runs not completed, notes) and, for a figure, its PNG as an <img>
with a path relative to the page. A figure's PNG is drawn into <out> (as `render` draws it) when
it is missing, older than the runs or the registry file it shows, or with --redraw; a figure with
no data to draw (every panel would say "data missing") is listed as not run instead.
"""

from __future__ import annotations

import os
import pathlib
import shlex

from looksam import summary as summary_file
from reproduce import registry
from results import claims as claims_lib
from results import collect as collect_lib
from results import evidence, figures, render, tables, writers

RUN_FILES = (summary_file.FILE, "events.out.tfevents*", "landscape*.npz")
SWEEPS = "sweeps"  # <out>/sweeps/<table>_<scale>_<row>_<column>/sweep.md: python -m results sweep --out
EVIDENCE_RUNS = "runs/evidence"  # where the evidence's runs train before `record` (docs/evidence.md)


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


def figure_png(table, results, runs, scale, out, tables_dir, redraw: bool = False) -> pathlib.Path | None:
    """`<out>/<id>_<scale>.png`, drawn unless an up-to-date one is there; None, and nothing drawn,
    when every panel of the figure would be a "data missing" note."""
    fig = figures.build(table, results, runs_dir=runs, scale=scale, tables_dir=tables_dir,
                        results_for=lambda t: collect_lib.collect(t, runs, scale))
    if not figures.has_data(fig):
        return None
    png = pathlib.Path(out) / f"{registry.render_stem(table.id, scale, table.reading_name)}.png"
    stale = redraw or not png.is_file() or png.stat().st_mtime < _newest_input(table, runs, scale, tables_dir)
    if stale:
        figures.write(fig, png.with_suffix(""))
    return png


def make_commands(table, scale: str, runs) -> list[str]:
    """The commands that make `table`'s runs at `scale` in `runs`: `reproduce run` (into the
    evidence store: in runs/evidence, then `results record`), and for a landscape figure each
    cell's `results landscape` on its first seed."""
    into_evidence = pathlib.Path(runs).resolve() == evidence.EVIDENCE_DIR.resolve()
    train = EVIDENCE_RUNS if into_evidence else str(runs)
    reading = table.reading_name
    flag = f" --reading {shlex.quote(reading)}" if reading else ""
    where = f"--scale {shlex.quote(scale)}"
    commands = [f"python -m reproduce run {table.id} {where} --runs {shlex.quote(train)}{flag}"]
    plot = table.plot if isinstance(table.plot, dict) else {}
    if table.kind == "figure" and plot.get("type") == "landscape":
        wanted, subdir = plot.get("cells"), str(plot.get("dir") or "landscape")
        for cell in table.cells:
            if wanted and cell.id not in wanted:
                continue
            seed_dir = registry.run_dir(train, table.id, scale, cell.row, cell.column, 0, reading=reading)
            out = "" if subdir == "landscape" else f" --out {shlex.quote(str(seed_dir / subdir))}"
            commands.append(f"python -m results landscape {shlex.quote(str(seed_dir))}{out}")
    if into_evidence:
        commands.append(f"python -m results record {table.id} --runs {shlex.quote(train)} {where}{flag}")
    return commands


def sweep_links(table, scale: str, out) -> tuple[tuple[str, str], ...]:
    """(text, href relative to <out>) of each sweep rendered beside the report over a cell of
    `table`: <out>/sweeps/<table>_<scale>_<row>_<column>/sweep.md, and its heatmap where drawn."""
    stem = registry.render_stem(table.id, scale, table.reading_name)
    links = []
    for cell in table.cells:
        folder = pathlib.PurePosixPath(SWEEPS, f"{stem}_{cell.row}_{cell.column}")
        for name, text in (("sweep.md", cell.id), ("sweep.png", f"{cell.id} heatmap")):
            if (pathlib.Path(out) / folder / name).is_file():
                links.append((text, str(folder / name)))
    return tuple(links)


INDEX_HEAD = ("Id", "Kind", "Paper, source: title", "Cells", "Claims")


def index_row(table, results, ran: bool, commands: list[str]) -> tables.Row:
    """A table's line in the report's index: a link to its section, or the commands that make it."""
    kind = table.kind + (f" ({table.plot.get('type', 'bars')})" if table.kind == "figure" else "")
    what = tables.Cell.of(f"{table.paper_name}, {table.source}: {table.title}")
    n = completed_cells(results)
    if not ran:
        why = f"{n} of {len(table.cells)} completed, no data to draw; " if n else ""
        make = tables.Cell(lines=(f"not run: {why}make it with", *(f"`{c}`" for c in commands)), kind="make")
        return tables.Row((tables.Cell.of(table.id), tables.Cell.of(kind), what, make, tables.Cell.of("—")),
                          kind="not-run", key=table.id)
    claims = (writers.verdict_counts_html(claims_lib.check_table(table, results)) if table.claims
              else "none to check")
    return tables.Row((tables.Cell.of(table.id, href=f"#{table.id}"), tables.Cell.of(kind), what,
                       tables.Cell.of(f"{n} of {len(table.cells)} completed"), tables.Cell.of(claims)),
                      key=table.id)


def build(runs, scale: str, out=None, tables_dir=registry.TABLES_DIR, source: str | None = None,
          redraw: bool = False, reading: str | None = None) -> pathlib.Path:
    """Writes `<out>/index.html` (figures' PNGs beside it); returns its path. A reading other than
    the paper's: `<out>/index_<reading>.html`, of the tables that declare it. A figure that cannot
    be drawn is named on the page, and a figures.DrawError naming each follows once it is written."""
    runs = pathlib.Path(runs)
    out = pathlib.Path(out) if out is not None else registry.renders_dir(runs)
    out.mkdir(parents=True, exist_ok=True)
    source = source or f"`{runs}`"
    rows, sections, n_ran, failed = [], [], 0, []
    tables_ = list(registry.all_tables(pathlib.Path(tables_dir)).values())
    if reading not in (None, registry.PAPER):
        tables_ = [registry.load(t.id, pathlib.Path(tables_dir), reading=reading) for t in tables_
                   if reading in t.reading_names()]
        if not tables_:
            raise ValueError(f"no table declares the reading {reading!r}")
    for table in tables_:
        results = collect_lib.collect(table, runs, scale)
        ran = completed_cells(results) > 0
        images: tuple[str, ...] = ()
        undrawn = None
        if ran and table.kind == "figure":
            try:
                png = figure_png(table, results, runs, scale, out, tables_dir, redraw)
            except figures.DrawError as e:  # the rest of the page still gets written
                failed.append(str(e))
                png, undrawn = None, str(e)
            ran = png is not None or undrawn is not None  # nothing to draw: listed as not run
            images = (pathlib.Path(os.path.relpath(png, out)).as_posix(),) if png else ()
        rows.append(index_row(table, results, ran, [] if ran else make_commands(table, scale, runs)))
        if not ran:
            continue
        n_ran += 1
        sections.append(render.section(table, results, scale, source, images, level=2, anchor=table.id,
                                       legend=False, sweeps=sweep_links(table, scale, out), error=undrawn))
    read_as = tables_[0].reading if reading not in (None, registry.PAPER) else None
    heading = f"Results at scale {scale}" + (f", reading {read_as.name} ({read_as.label})" if read_as else "")
    page = writers.html_document("report.html.j2", heading, source=source, scale=scale, n_ran=n_ran,
                                 index=tables.Table(INDEX_HEAD, tuple(rows)), sections=sections)
    path = out / ("index.html" if reading in (None, registry.PAPER) else f"index_{reading}.html")
    path.write_text(page)
    if failed:
        raise figures.DrawError("; ".join(failed) + f" (wrote {path} without them)")
    return path
