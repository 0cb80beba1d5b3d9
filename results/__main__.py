"""Command line: render tables and figures from run directories or wandb.

    python -m results render looksam_iclr_cifar10 --runs runs --scale cpu [--out results/]
    python -m results render all --wandb ENTITY/PROJECT --scale paper
    python -m results list
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from reproduce import registry
from results import collect, render


def _render(args) -> int:
    tables_dir = pathlib.Path(args.tables)
    ids = registry.names(tables_dir) if args.table == ["all"] else args.table
    for table_id in ids:
        table = registry.load(table_id, tables_dir)
        if args.wandb:
            def results_for(t):
                return collect.collect_wandb(t, args.wandb, args.scale)
            source, runs_dir = f"wandb {args.wandb}", None
        else:
            def results_for(t):
                return collect.collect(t, args.runs, args.scale)
            source, runs_dir = f"`{args.runs}`", args.runs
        try:
            results = results_for(table)
        except RuntimeError as e:  # wandb unreachable: one line, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 1
        paths = render.write(table, results, args.scale, source, args.out, runs_dir=runs_dir,
                             tables_dir=tables_dir, results_for=results_for)
        print(paths["md"].read_text())
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def _list(args) -> int:
    for table_id, table in registry.all_tables(pathlib.Path(args.tables)).items():
        kind = f"{table.kind} ({table.plot.get('type', '?')})" if table.kind == "figure" else table.kind
        print(f"{table_id:28s} {kind:20s} {render.title(table)}")
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
    r.add_argument("--scale", default="cpu", choices=("paper", "cpu", "smoke"))
    r.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read run summaries from wandb instead")
    r.add_argument("--out", default="results", help="output directory (default: results/)")
    r.set_defaults(fn=_render)
    sub.add_parser("list", help="list the registry's tables and figures").set_defaults(fn=_list)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # an unknown table id or a bad registry file: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
