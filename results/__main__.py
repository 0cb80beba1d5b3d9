"""Command line: render tables and figures from run directories or wandb.

    python -m results render looksam_iclr_cifar10 --runs runs --scale cpu [--out runs/renders]
    python -m results render esam_table1 --runs evidence --scale afternoon --reading code
    python -m results render all --wandb ENTITY/PROJECT --scale paper
    python -m results render looksam_iclr_cifar10 --scale cpu --wandb-log [--wandb-mode offline]
    python -m results report --runs runs --scale cpu [--out runs/renders] [--redraw]
    python -m results list
    python -m results claims looksam_iclr_cifar10 --scale afternoon [--runs DIR] [--strict]
    python -m results record looksam_iclr_cifar10 --runs runs/evidence --scale afternoon
    python -m results record --throughput esam_table1 --scale afternoon [--rounds N] [--steps K]
        [-o scale.model_kwargs.resnet18.width=64 --variant full-width] [--replace]
    python -m results sweep runs/evidence/looksam_iclr_cifar10/afternoon/resnet18/looksam5
    python -m results landscape RUN_DIR [--scale cpu|paper] [--grid N] [--groups G] [--images M]

`claims` prints a table's claim checks from the committed evidence (evidence/) unless --runs
names a runs folder; --strict exits 1 when a claim fails. `record` copies a runs folder's
completed runs into evidence/ (results/evidence.py); `record --throughput` instead times the
table's cells side by side in this process (looksam/throughput.py) and writes
<runs>/<table>/<scale>[/reading-<name>]/throughput.json (--runs, default: --into, evidence/), from
which claims on a throughput metric are judged. `report` writes one HTML page of every table
and figure with its claims and figures (<runs>/renders/index.html; results/report.py).
`render --wandb-log` also logs each table's cells and claims as wandb Tables, in the group of its
training runs (results/wandb_log.py, docs/wandb.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

from reproduce import registry
from results import claims, collect, evidence, figures, landscape, render, report, sweep, tables, wandb_log


def portable_path(path) -> str:
    """A path as a committed render may show it: relative to here when it lies below, else its
    name alone (`reproduce run` passes an absolute runs folder)."""
    p = pathlib.Path(path)
    try:
        return str(p.resolve().relative_to(pathlib.Path.cwd().resolve()))
    except ValueError:
        return p.name if p.is_absolute() else str(p)


def write(table, results, scale: str, source: str, out, runs_dir=None, tables_dir=None,
          results_for=None) -> dict[str, pathlib.Path]:
    """Writes `<out>/<id>_<scale>.{md,tex,html}` (a figure: its PNG/SVG, Markdown and HTML);
    returns the paths by suffix. runs_dir: TensorBoard curves; tables_dir and results_for (table
    -> results): another table a figure takes points from. Here, above render and figures, since
    it uses both."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = registry.render_stem(table.id, scale, table.reading_name)
    paths: dict[str, pathlib.Path] = {}
    seeds = render.completed_seeds(results)
    before = render.rendered_seeds(out / f"{stem}.md")
    if before is not None and before > seeds:
        # A render of more evidence (e.g. the committed one) outlives a rerun from less.
        raise render.FewerSeeds(f"{out / stem}.md renders {before} completed seed(s); these results "
                                f"have {seeds}: kept it (render into another --out to see them)")
    images: tuple[str, ...] = ()
    if table.kind == "figure":
        drawn = figures.draw(table, results, out / stem, runs_dir=runs_dir, scale=scale,
                             tables_dir=tables_dir, results_for=results_for)
        paths.update(drawn)
        images = tuple(p.name for suffix, p in drawn.items() if suffix == "png")
    paths["md"] = out / f"{stem}.md"
    paths["md"].write_text(f"{render.SEEDS_MARK}{seeds} -->\n"
                           + render.markdown(table, results, scale, source, images))
    if table.kind != "figure":
        paths["tex"] = out / f"{stem}.tex"
        paths["tex"].write_text(render.latex(table, results, scale))
    paths["html"] = out / f"{stem}.html"
    paths["html"].write_text(render.html_page(table, results, scale, source, images))
    return paths


def _render(args) -> int:
    tables_dir = pathlib.Path(args.tables)
    ids = registry.names(tables_dir) if args.table == ["all"] else args.table
    kept = 0
    out = args.out or registry.renders_dir(args.runs)
    for table_id in ids:
        table = registry.load(table_id, tables_dir, reading=args.reading)
        if args.wandb:
            def results_for(t):
                return collect.collect_wandb(t, args.wandb, args.scale)
            source, runs_dir = f"wandb {args.wandb}", None
        else:
            def results_for(t):
                return collect.collect(t, args.runs, args.scale)
            source, runs_dir = f"`{portable_path(args.runs)}`", args.runs
        try:
            results = results_for(table)
        except RuntimeError as e:  # wandb unreachable: one line, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 1
        try:
            paths = write(table, results, args.scale, source, out, runs_dir=runs_dir,
                          tables_dir=tables_dir, results_for=results_for)
        except (render.FewerSeeds, figures.DrawError) as e:  # the other tables still render
            print(f"error: {e}", file=sys.stderr)
            kept += 1
            continue
        print(paths["md"].read_text())
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
        if args.wandb_log and not _log_to_wandb(args, table, results, source, out):
            kept += 1
    return 1 if kept else 0


def _log_to_wandb(args, table, results, source: str, out) -> bool:
    """--wandb-log: the table's cells and claims as wandb Tables; False (and one line) on failure."""
    entity, project = wandb_log.split_project(args.wandb_project or args.wandb)
    try:
        where = wandb_log.log(table, results, args.scale, project=project, entity=entity,
                              mode=args.wandb_mode, out=out, source=source)
    except RuntimeError as e:
        print(f"error: wandb logging of {table.id}: {e}", file=sys.stderr)
        return False
    if where is None:
        print(f"wandb is disabled: {table.id} not logged", file=sys.stderr)
    elif os.path.isdir(where):
        print(f"logged {table.id} to wandb offline in {where} (upload: wandb sync {where})", file=sys.stderr)
    else:
        print(f"logged {table.id} to wandb: {where}", file=sys.stderr)
    return True


def _claims(args) -> int:
    table = registry.load(args.table, pathlib.Path(args.tables), reading=args.reading)
    runs = args.runs or evidence.EVIDENCE_DIR
    results = collect.collect(table, runs, args.scale)
    checks = claims.check_table(table, results)
    source = "the committed evidence" if args.runs is None else f"runs folder {args.runs}"
    print(f"{tables.title(table)} at scale {args.scale}, from {source}: "
          f"{claims.summary_line(checks)}")
    if not table.claims:
        print(f"no claims: {table.claims_reason}")
    for row in tables.claim_rows(table, results, checks):
        print("  " + " | ".join(row))
    bad = claims.failed(checks)
    if args.strict and bad:
        print(f"{len(bad)} check(s) fail: " + ", ".join(f"{c.claim.id} at {c.at}" for c in bad),
              file=sys.stderr)
        return 1
    return 0


def _record(args) -> int:
    if args.throughput:
        return _record_throughput(args)
    if args.runs is None:
        print("error: record needs --runs (the runs folder to copy from)", file=sys.stderr)
        return 2
    for line in evidence.record(args.table, args.runs, args.scale, into=args.into,
                                replace=args.replace, reading=args.reading):
        print(line)
    return 0


def _record_throughput(args) -> int:
    table = registry.load(args.table, pathlib.Path(args.tables), reading=args.reading)
    if args.override and not args.variant:
        print("error: --throughput with -o needs --variant NAME: the measurement goes to "
              "throughput-NAME.json, so that throughput.json stays the scale's own (the one claims "
              "read)", file=sys.stderr)
        return 2
    if args.variant and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.variant):
        print(f"error: --variant {args.variant!r}: use lower-case letters, digits and '-'", file=sys.stderr)
        return 2
    out = registry.scale_dir(args.runs or args.into, table.id, args.scale, table.reading_name)
    path = out / collect.throughput_file(args.variant)
    if path.exists() and not args.replace:
        print(f"error: {path} exists (a recorded measurement); pass --replace to measure again and "
              "overwrite it", file=sys.stderr)
        return 2
    from looksam import throughput  # the trainer and its input pipeline: only when measuring

    measured = throughput.measure(table, args.scale, rounds=args.rounds, steps=args.steps,
                                  cells=args.cells, overrides=tuple(args.override or ()),
                                  progress=lambda text: print(text, file=sys.stderr, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measured, indent=1) + "\n")
    cells = measured["cells"]
    for cell_id, cell in cells.items():
        rates = cell["images_per_sec"]
        line = (f"{cell_id}: {cell['median']:,.1f} images/s (median of {len(rates)} rounds, "
                f"{min(rates):,.1f}-{max(rates):,.1f})")
        base = cells.get(f"{cell_id.split('/')[0]}/{table.base_column}")
        if base and base is not cell:  # step time relative to the row's base column, and the ideal
            line += (f"; step time {base['median'] / cell['median']:.2f}x {table.base_column} "
                     f"(ideal {cell['ideal_cost'] / base['ideal_cost']:.2f}x)")
        print(line)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _sweep(args) -> int:
    text = sweep.markdown(args.directory)
    print(text)
    out = pathlib.Path(args.out or args.directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.md").write_text(text)
    png = sweep.heatmap(args.directory, out / "sweep.png")
    print(f"wrote {out / 'sweep.md'}" + (f", {png}" if png else ""), file=sys.stderr)
    return 0


def _report(args) -> int:
    try:
        path = report.build(args.runs, args.scale, args.out, args.tables,
                            source=f"`{portable_path(args.runs)}`", redraw=args.redraw, reading=args.reading)
    except figures.DrawError as e:  # the page is written, without the figures named
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _list(args) -> int:
    for table_id, table in registry.all_tables(pathlib.Path(args.tables)).items():
        kind = f"{table.kind} ({table.plot.get('type', '?')})" if table.kind == "figure" else table.kind
        print(f"{table_id:28s} {kind:20s} {tables.title(table)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=str(registry.TABLES_DIR), help="registry directory")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render tables or figures (Markdown to stdout and files)")
    r.add_argument("table", nargs="+", help="table or figure ids, or 'all'")
    r.add_argument("--runs", default=os.environ.get("LOOKSAM_RUNS", "runs"),
                   help="runs directory: <runs>/<table>/<scale>/<row>/<column>/seed<k>/ "
                        "(default: $LOOKSAM_RUNS, else runs)")
    r.add_argument("--scale", default="cpu", choices=registry.scale_names())
    r.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read run summaries from wandb instead")
    r.add_argument("--out", default=None,
                   help="output directory (default: <runs>/renders; evidence/renders for the evidence)")
    r.add_argument("--wandb-log", action="store_true",
                   help="also log the cells and claims as wandb Tables, in the table's group "
                        "<table>/<scale>[/<reading>] (offline runs: <out>/wandb)")
    r.add_argument("--wandb-project", metavar="[ENTITY/]PROJECT", default=None,
                   help="where --wandb-log logs (default: --wandb's project, else looksam)")
    r.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), default=None,
                   help="for --wandb-log (default: $WANDB_MODE, else online with an API key, else offline)")
    r.set_defaults(fn=_render)
    rp = sub.add_parser("report", help="one HTML page of every table and figure with its claims "
                                       "(<runs>/renders/index.html)")
    rp.add_argument("--runs", default=os.environ.get("LOOKSAM_RUNS", "runs"),
                    help="runs directory, or evidence for the committed evidence (default: "
                         "$LOOKSAM_RUNS, else runs)")
    rp.add_argument("--scale", default="cpu", choices=registry.scale_names())
    rp.add_argument("--out", default=None, help="where index.html and the figures' PNGs go "
                                                "(default: <runs>/renders)")
    rp.add_argument("--redraw", action="store_true", help="draw every figure again, even up to date")
    rp.set_defaults(fn=_report)
    sub.add_parser("list", help="list the registry's tables and figures").set_defaults(fn=_list)
    c = sub.add_parser("claims", help="check a table's claims (committed evidence by default)")
    c.add_argument("table", choices=registry.names())
    c.add_argument("--scale", default="cpu", choices=registry.scale_names())
    c.add_argument("--runs", default=None, help="a runs folder instead of the committed evidence")
    c.add_argument("--strict", action="store_true", help="exit 1 when a claim fails")
    c.set_defaults(fn=_claims)
    sw = sub.add_parser("sweep", help="render a multirun over its swept keys (table; heatmap for two)")
    sw.add_argument("directory", help="a folder of jobs (any depth), e.g. a reproduce --sweep runs folder")
    sw.add_argument("--out", default=None, help="where sweep.md and sweep.png go (default: the folder)")
    sw.set_defaults(fn=_sweep)
    rec = sub.add_parser("record", help="copy a runs folder's completed runs into the evidence store")
    rec.add_argument("table", choices=registry.names())
    rec.add_argument("--runs", default=None, help="the runs folder (e.g. runs/evidence); with "
                                                   "--throughput, where throughput.json goes")
    rec.add_argument("--scale", required=True, choices=registry.scale_names())
    rec.add_argument("--into", default=str(evidence.EVIDENCE_DIR), help="default: evidence/")
    rec.add_argument("--replace", action="store_true",
                     help="overwrite a recorded summary that differs (default: keep it)")
    rec.add_argument("--throughput", action="store_true",
                     help="time the table's cells side by side (one process, alternating rounds) "
                          "and write throughput.json instead of copying runs")
    rec.add_argument("--rounds", type=int, default=5, help="--throughput: timed rounds (default 5)")
    rec.add_argument("--steps", type=int, default=10,
                     help="--throughput: steps per cell and round, rounded up to whole periods")
    rec.add_argument("--cells", nargs="+", default=None, metavar="ROW/COLUMN",
                     help="--throughput: only these cells (default: all)")
    rec.add_argument("-o", "--override", action="append", metavar="KEY=VALUE",
                     help="--throughput: a Hydra override for every cell (repeatable; needs --variant), "
                          "e.g. scale.model_kwargs.resnet18.width=64 for the full-width model")
    rec.add_argument("--variant", default=None,
                     help="--throughput: write throughput-VARIANT.json (shown, judges no claim)")
    rec.set_defaults(fn=_record)
    la = sub.add_parser("landscape", help="the loss landscape around a run's final checkpoint "
                                          "(ESAM Figure 4; results/landscape.py)")
    landscape.add_arguments(la)  # JAX and the trainer are imported only when it runs
    la.set_defaults(fn=landscape.main)
    for command in (r, rp, c, rec):
        command.add_argument("--reading", default=None,
                             help="one of the tables' readings (e.g. code: the authors' code); default: "
                                  "the paper's. Its runs: <runs>/<table>/<scale>/reading-<name>/")
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # an unknown table id or a bad registry file: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
