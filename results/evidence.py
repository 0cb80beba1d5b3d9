"""The evidence store: committed summaries of finished runs, so that a fresh clone renders every
measured table, its claims and its curves without rerunning anything.

    evidence/<table>/<scale>/<row>/<column>/seed<k>/summary.json

The layout is a runs folder's (reproduce.registry.run_dir), so everything that reads runs reads it.
`record` copies the completed runs of a runs folder into it, without machine-specific paths; a
summary already recorded is never replaced by a different one (`replace=True` to do so on
purpose), and nothing but completed runs is recorded. A cell of another table whose composed
config at the same scale equals a recorded run's (run_identity.changes() empty, the resumable keys
aside) gets a copy that names where it came from (`evidence_from`): the SGD-M and SAM cells the
ICLR CIFAR-10 table and ESAM Table 1 both take from ESAM Table 4 share their runs.
"""

from __future__ import annotations

import contextlib
import json
import pathlib

from reproduce import compose, registry

EVIDENCE_DIR = pathlib.Path(__file__).resolve().parent.parent / "evidence"
# Where a run happened to live on the machine that ran it: not evidence, and not portable.
MACHINE_KEYS = (("data", "data_dir"), ("trainer", "workdir"))


def portable(summary: dict) -> dict:
    """The summary without machine-specific paths (data_dir, workdir)."""
    out = json.loads(json.dumps(summary))
    config = out.get("config") or {}
    for group, key in MACHINE_KEYS:
        if isinstance(config.get(group), dict) and key in config[group]:
            config[group][key] = None
    return out


def same_run(a: dict, b: dict) -> bool:
    from looksam import run_identity

    return not run_identity.changes(portable({"config": a})["config"], portable({"config": b})["config"])


def _write(path: pathlib.Path, summary: dict, replace: bool) -> str:
    """'recorded', 'unchanged' or 'kept' (a different summary is already there)."""
    text = json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n"
    if path.exists():
        if path.read_text() == text:
            return "unchanged"
        if not replace:
            return "kept"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return "recorded"


def record(table_id: str, runs, scale: str, into=EVIDENCE_DIR, replace: bool = False,
           share: bool = True) -> list[str]:
    """Copies the completed runs of `table_id` at `scale` from `runs` into the store; one line
    per seed saying what happened. `share`: also into equal cells of other tables."""
    table = registry.load(table_id)
    lines = []
    for cell in table.cells:
        for seed_dir in sorted((pathlib.Path(runs) / table.id / scale / cell.row / cell.column)
                               .glob("seed*")):
            try:
                summary = json.loads((seed_dir / "summary.json").read_text())
            except (OSError, ValueError):
                continue
            if summary.get("status") != "completed":
                lines.append(f"{cell.id}/{seed_dir.name}: {summary.get('status')}, not recorded")
                continue
            seed = int(seed_dir.name[4:])
            clean = portable(summary)
            dest = registry.run_dir(into, table.id, scale, cell.row, cell.column, seed)
            what = _write(dest / "summary.json", clean, replace)
            lines.append(f"{cell.id}/{seed_dir.name}: {what} in {dest}"
                         + (" (a different summary is there; --replace to overwrite)"
                            if what == "kept" else ""))
            if share:
                lines += _share(table, cell, seed, scale, clean, into, replace)
    return lines


def _share(table, cell, seed: int, scale: str, summary: dict, into, replace: bool) -> list[str]:
    lines = []
    origin = f"{table.id}/{cell.id}/seed{seed}"
    others = [(other, other_cell) for other in registry.all_tables().values()
              for other_cell in other.cells if (other.id, other_cell.id) != (table.id, cell.id)]
    with contextlib.suppress(Exception):  # all in one Hydra context (and cached); failures below
        compose.configs([c for _, c in others], scale, seed)
    for other, other_cell in others:
        try:
            target = compose.config(other_cell, scale, seed)
        except Exception:  # noqa: BLE001 - a cell that does not compose shares nothing
            continue
        if not same_run(summary["config"], target):
            continue
        copy = dict(summary, evidence_from=origin, table=other.id, cell=other_cell.id)
        dest = registry.run_dir(into, other.id, scale, other_cell.row, other_cell.column, seed)
        what = _write(dest / "summary.json", copy, replace)
        lines.append(f"  shared with {other.id} {other_cell.id}: {what}")
    return lines
