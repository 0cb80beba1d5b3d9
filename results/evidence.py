"""The evidence store: committed summaries of finished runs, so that a fresh clone renders every
measured table, its claims and its curves without rerunning anything.

    evidence/<table>/<scale>/<row>/<column>/seed<k>/summary.json

The layout is a runs folder's (reproduce.registry.run_dir), so everything that reads runs reads it.
`record` copies the completed runs of a runs folder into it, without machine-specific paths; a
summary already recorded is never replaced by a different one (`replace=True` to do so on
purpose), and nothing but completed runs is recorded. The points of a sweep over a cell
(<column>/<variant>/seed<k>, e.g. sam.alpha=0.2) are recorded at the same place; the point whose
config is the cell's as the table now composes it (its value became the table's) is also recorded
as the cell's run, naming the point in `evidence_from`. A cell of another table whose composed
config at the same scale equals a recorded run's (run_identity.changes() empty, the resumable keys
aside) gets a copy that names where it came from (`evidence_from`): the SGD-M and SAM cells the
ICLR CIFAR-10 table and ESAM Table 1 both take from ESAM Table 4 share their runs. Readings
(reproduce/registry.py) count as tables here: a reading's runs live at
evidence/<table>/<scale>/reading-<name>/..., and a cell that composes the same in another reading
or table gets a copy as well.
"""

from __future__ import annotations

import contextlib
import json
import pathlib

from looksam import run_identity
from looksam import summary as summary_file
from reproduce import compose, registry

EVIDENCE_DIR = registry.EVIDENCE_DIR
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
           share: bool = True, reading: str | None = None) -> list[str]:
    """Copies the completed runs of `table_id` at `scale` from `runs` into the store, the points
    of sweeps over its cells (<column>/<variant>/seed<k>) too; one line per seed saying what
    happened. A sweep point whose config equals the cell's as the table now composes it (the
    swept value became the table's) is also that cell's run. `share`: also into equal cells of
    other tables."""
    table = registry.load(table_id, reading=reading)
    lines = []
    for cell in table.cells:
        cell_dir = registry.run_dir(runs, table.id, scale, cell.row, cell.column, 0,
                                    reading=table.reading_name).parent
        for seed_dir in sorted(cell_dir.glob("seed*")):
            summary = _completed(seed_dir, f"{cell.id}/{seed_dir.name}", lines)
            if summary is None:
                continue
            seed = int(seed_dir.name[4:])
            lines += _record_cell(table, cell, seed, scale, portable(summary), into, replace, share)
        for seed_dir in sorted(cell_dir.glob("*=*/seed*")):
            variant, seed = seed_dir.parent.name, int(seed_dir.name[4:])
            summary = _completed(seed_dir, f"{cell.id}/{variant}/{seed_dir.name}", lines)
            if summary is None:
                continue
            clean = portable(summary)
            dest = registry.run_dir(into, table.id, scale, cell.row, cell.column, seed, variant,
                                    table.reading_name)
            what = _write(summary_file.path(dest), clean, replace)
            lines.append(f"{cell.id}/{variant}/seed{seed}: {what} in {dest}" + _kept_hint(what))
            try:
                target = compose.config(cell, scale, seed)
            except Exception:  # noqa: BLE001 - a cell that does not compose takes no point
                continue
            if same_run(clean["config"], target):
                copy = dict(clean, evidence_from=f"{_name(table)}/{cell.id}/{variant}/seed{seed}")
                lines.append(f"  is {cell.id}/seed{seed} as the table now composes it:")
                lines += ["  " + x for x in
                          _record_cell(table, cell, seed, scale, copy, into, replace, share)]
    return lines


def _completed(seed_dir: pathlib.Path, name: str, lines: list[str]) -> dict | None:
    summary = summary_file.read(seed_dir)
    if summary is None:
        return None
    if summary.status != "completed":
        lines.append(f"{name}: {summary.status}, not recorded"
                     + (f" ({summary.message})" if summary.status == "failed" and summary.message else ""))
        return None
    return dict(summary)


def _kept_hint(what: str) -> str:
    return " (a different summary is there; --replace to overwrite)" if what == "kept" else ""


def _record_cell(table, cell, seed: int, scale: str, clean: dict, into, replace: bool,
                 share: bool) -> list[str]:
    dest = registry.run_dir(into, table.id, scale, cell.row, cell.column, seed,
                            reading=table.reading_name)
    what = _write(summary_file.path(dest), clean, replace)
    lines = [f"{cell.id}/seed{seed}: {what} in {dest}" + _kept_hint(what)]
    if share:
        lines += _share(table, cell, seed, scale, clean, into, replace)
    return lines


def _share(table, cell, seed: int, scale: str, summary: dict, into, replace: bool) -> list[str]:
    lines = []
    origin = summary.get("evidence_from") or f"{_name(table)}/{cell.id}/seed{seed}"
    others = [(other, other_cell) for other in _every_reading()
              for other_cell in other.cells
              if (other.id, other.reading_name, other_cell.id) != (table.id, table.reading_name, cell.id)]
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
        if other.reading_name or "reading" in copy:  # summaries from before readings have none
            copy["reading"] = other.reading_name
        dest = registry.run_dir(into, other.id, scale, other_cell.row, other_cell.column, seed,
                                reading=other.reading_name)
        what = _write(summary_file.path(dest), copy, replace)
        lines.append(f"  shared with {_name(other)} {other_cell.id}: {what}")
    return lines


def _name(table) -> str:
    """A table as evidence_from names it: its id, and its reading when not the paper's."""
    return f"{table.id}@{table.reading_name}" if table.reading_name else table.id


def _every_reading() -> list:
    """Every table in every reading it declares, the paper's first."""
    tables = registry.all_tables().values()
    return [registry.load(t.id, reading=r) for t in tables for r in t.reading_names()]
