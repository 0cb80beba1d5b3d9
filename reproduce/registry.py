"""The table registry: one YAML file per table or figure in reproduce/tables/, the single source of
its cells (as Hydra overrides), the paper's printed values, and what we chose where a paper is
inconsistent or silent. The driver (reproduce/__main__.py), the make targets and the renderer
(results/) all read it; no table is described anywhere else.

File format (reproduce/tables/<id>.yaml):

    id: looksam_table1                 # = file name
    kind: table                        # table | figure
    paper_name: LookSAM (CVPR 2022)    # which paper and version
    source: Table 1                    # as printed
    title: Top-1 accuracy (%) on CIFAR-100
    caption: ...                       # the paper's caption
    hardware: ...                      # what the paper ran on (or "not stated")
    paper_time: ...                    # how long the paper's runs took (or "not stated")
    seeds: 1                           # the paper's seeds (ESAM: 3); SEEDS= overrides
    base_column: sgd                   # column the time/throughput ratios are relative to
    metrics:                           # what a cell shows; paper values follow this order
      - {key: best_test_accuracy, label: Top-1 (%), kind: accuracy, scale: 100, format: .2f}
      - {key: seconds_per_epoch, label: s/epoch, kind: time, format: .0f}
    overrides: [data=cifar100]         # Hydra overrides common to every cell
    rows:    [{id: resnet18, label: ResNet-18, overrides: [model=resnet18]}, ...]
    columns: [{id: sgd, label: SGD-M, overrides: [sam=none]}, ...]
    cell_overrides: {resnet18/sam: [...]}   # optional, per cell "row/column"
    paper:                             # row id -> one entry per column: a number, {mean, std},
      resnet18: [78.1, 79.0, ...]      # a list with one of those per metric, or null (not printed)
    skip: [resnet50/sam10]             # optional: cells the paper leaves empty and we do not run
    plot: {...}                        # figures: how results/ draws it
    notes: [...]                       # choices where the paper is inconsistent or silent

A metric `kind` is accuracy (higher is better, shown x `scale`), time (seconds, lower is better;
shown with its ratio to the base column) or throughput (images/s; ratio to the base column).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import yaml

TABLES_DIR = pathlib.Path(__file__).resolve().parent / "tables"
METRIC_KINDS = ("accuracy", "time", "throughput")


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # a summary.json key
    label: str
    kind: str = "accuracy"
    scale: float = 1.0  # accuracy: 100 shows percent
    format: str = ".2f"


@dataclasses.dataclass(frozen=True)
class Cell:
    row: str
    column: str
    overrides: tuple[str, ...]
    paper: tuple[Any, ...]  # one value per metric: a number, {"mean", "std"} or None

    @property
    def id(self) -> str:
        return f"{self.row}/{self.column}"


@dataclasses.dataclass(frozen=True)
class Table:
    id: str
    kind: str
    paper_name: str
    source: str
    title: str
    caption: str
    hardware: str
    paper_time: str
    seeds: int
    base_column: str | None
    metrics: tuple[Metric, ...]
    overrides: tuple[str, ...]
    rows: tuple[dict, ...]
    columns: tuple[dict, ...]
    cells: tuple[Cell, ...]
    plot: dict
    notes: tuple[str, ...]

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(f"{self.id} has no cell {cell_id!r}")

    def label(self, axis: str, item_id: str) -> str:
        items = self.rows if axis == "row" else self.columns
        return next(i["label"] for i in items if i["id"] == item_id)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if duplicates:
            raise ValueError(f"duplicate key(s) {duplicates} {node.start_mark}")
        return super().construct_mapping(node, deep=deep)


def _paper_values(value, n_metrics: int, where: str) -> tuple:
    if value is None:
        return (None,) * n_metrics
    if n_metrics == 1 and not isinstance(value, list):
        value = [value]
    if not isinstance(value, list) or len(value) != n_metrics:
        raise ValueError(f"{where}: expected {n_metrics} paper value(s), got {value!r}")
    for v in value:
        ok = v is None or isinstance(v, (int, float)) or (
            isinstance(v, dict) and set(v) == {"mean", "std"})
        if not ok:
            raise ValueError(f"{where}: a paper value is a number, {{mean, std}} or null; got {v!r}")
    return tuple(value)


def load(table_id: str, directory: pathlib.Path = TABLES_DIR) -> Table:
    path = directory / f"{table_id}.yaml"
    if not path.exists():
        raise ValueError(f"unknown table {table_id!r}; choose one of {names(directory)}")
    raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    where = str(path)
    if raw.get("id") != table_id:
        raise ValueError(f"{where}: id {raw.get('id')!r} must equal the file name {table_id!r}")
    metrics = tuple(Metric(**m) for m in raw["metrics"])
    for m in metrics:
        if m.kind not in METRIC_KINDS:
            raise ValueError(f"{where}: metric {m.key} has kind {m.kind!r}; one of {METRIC_KINDS}")
    rows, columns = tuple(raw["rows"]), tuple(raw["columns"])
    paper = raw.get("paper") or {}
    unknown_rows = set(paper) - {r["id"] for r in rows}
    if unknown_rows:
        raise ValueError(f"{where}: paper values for unknown rows {sorted(unknown_rows)}")
    skip = set(raw.get("skip") or [])
    cell_overrides = raw.get("cell_overrides") or {}
    cells = []
    for r in rows:
        values = paper.get(r["id"]) or [None] * len(columns)
        if len(values) != len(columns):
            raise ValueError(f"{where}: row {r['id']} has {len(values)} paper values for "
                             f"{len(columns)} columns")
        for c, value in zip(columns, values, strict=True):
            cell_id = f"{r['id']}/{c['id']}"
            if cell_id in skip:
                continue
            overrides = merge_overrides(raw.get("overrides", []), r.get("overrides", []),
                                        c.get("overrides", []), cell_overrides.get(cell_id, []))
            cells.append(Cell(r["id"], c["id"], overrides,
                              _paper_values(value, len(metrics), f"{where} {cell_id}")))
    unknown_cells = (set(cell_overrides) | skip) - {f"{r['id']}/{c['id']}" for r in rows for c in columns}
    if unknown_cells:
        raise ValueError(f"{where}: cell_overrides/skip name unknown cells {sorted(unknown_cells)}")
    base = raw.get("base_column")
    if base is not None and base not in {c["id"] for c in columns}:
        raise ValueError(f"{where}: base_column {base!r} is not a column id")
    return Table(id=table_id, kind=raw.get("kind", "table"), paper_name=raw["paper_name"],
                 source=raw["source"], title=raw["title"], caption=raw.get("caption", ""),
                 hardware=raw.get("hardware", "not stated"),
                 paper_time=raw.get("paper_time", "not stated"), seeds=int(raw.get("seeds", 1)),
                 base_column=base, metrics=metrics, overrides=tuple(raw.get("overrides", [])),
                 rows=rows, columns=columns, cells=tuple(cells), plot=raw.get("plot") or {},
                 notes=tuple(raw.get("notes") or []))


def merge_overrides(*lists) -> tuple[str, ...]:
    """Concatenated Hydra overrides where a later one for the same key replaces an earlier one
    (a row's batch size over the table's), since Hydra rejects a key given twice."""
    merged: dict[str, str] = {}
    for overrides in lists:
        for o in overrides:
            merged[o.split("=", 1)[0]] = o
    return tuple(merged.values())


def names(directory: pathlib.Path = TABLES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def all_tables(directory: pathlib.Path = TABLES_DIR) -> dict[str, Table]:
    return {name: load(name, directory) for name in names(directory)}
