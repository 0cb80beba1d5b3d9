"""The table registry: one YAML file per table or figure in reproduce/tables/, the single source of
its cells (as Hydra overrides), the paper's printed values, and what we chose where a paper is
inconsistent or silent. The driver (reproduce/__main__.py), the make targets and the renderer
(results/) all read it; no table is described anywhere else, and whatever needs a cell's settings
composes its overrides with Hydra (reproduce/compose.py) rather than reading them.

File format (reproduce/tables/<id>.yaml):

    id: looksam_table1                 # = file name
    kind: table                        # table | figure
    paper_name: LookSAM (CVPR 2022)    # which paper and version
    source: Table 1                    # as printed
    title: Top-1 accuracy (%) on CIFAR-100
    caption: ...                       # the paper's caption
    hardware: ...                      # what the paper ran on (or "not stated")
    paper_hardware:                    # optional: the same, for `reproduce plan`'s paper-vs-predicted
      {profile: tpu_v3, chips: 128, basis: "..."}   # a configs/hardware/ profile; chips: a number or
                                       # column id -> number; basis: where it is stated (or inferred)
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
    readings:                          # optional: other readings than the paper's (its own is
      code: esam_code                  #   `paper`: the cells above); a name -> a shared file
                                       #   reproduce/readings/<file>.yaml, or inline:
      code: {label: ..., source: ..., overrides: [{set: sam.m=64, cite: "file:line: ..."}]}
    claims:                            # the paper's statements about the table, as comparisons
      - id: looksam5_matches_sam       # unique in the file
        quote: "..."                   # the paper's sentence, verbatim
        section: Section 4.2           # where it is
        axis: column                   # column: lhs/rhs are column ids, checked in every row;
        lhs: looksam5                  #   row: row ids, checked in every column
        op: "~"                        # ">", ">=" or "~" (results/claims.py holds the rule)
        rhs: sam
        metric: best_test_accuracy     # one of the table's metric keys
        factor: 1.4                    # optional: lhs against factor * rhs
        tolerance: 0.005               # "~" only, in the metric's raw units, with
        tolerance_reason: ...          #   its reason
        within: [resnet18]             # optional: only these ids of the other axis
        by_design: ...                 # optional: why our design cannot meet it
        paper_note: ...                # needed when the paper's own numbers break it
    claims_reason: ...                 # with `claims: []`: why there is nothing to check

A reading changes how every cell runs to follow another source than the paper's text (e.g. the
authors' code): its overrides go after each cell's, each with its citation. `load(id, reading=R)`
gives the table as that reading runs it; its runs live apart (`run_dir`), and every render, claim
and summary names it.

A metric `kind` is accuracy (higher is better, shown x `scale`), time (seconds, lower is better;
shown with its ratio to the base column) or throughput (images/s; ratio to the base column).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import yaml
from omegaconf import OmegaConf

TABLES_DIR = pathlib.Path(__file__).resolve().parent / "tables"
READINGS_DIR = pathlib.Path(__file__).resolve().parent / "readings"
PAPER = "paper"  # the reading every table has: its cells as the paper's text gives them
# The committed evidence: a runs folder of completed summaries (results/evidence.py records into it).
EVIDENCE_DIR = pathlib.Path(__file__).resolve().parent.parent / "evidence"
SCALES_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs" / "scale"


def scale_names() -> list[str]:
    """The scale presets the trainer accepts (configs/scale/*.yaml): a new file is a new scale."""
    return sorted(p.stem for p in SCALES_DIR.glob("*.yaml"))


def scale_dir(runs, table: str, scale: str, reading: str | None = None) -> pathlib.Path:
    """Where a table's runs at a scale live: <runs>/<table>/<scale>, and a reading other than the
    paper's below it, <runs>/<table>/<scale>/reading-<name> (a dash: an '=' in a path breaks the
    Hydra overrides that carry it, hydra.searchpath's list)."""
    path = pathlib.Path(runs) / table / scale
    return path if reading in (None, PAPER) else path / f"reading-{reading}"


def run_dir(runs, table: str, scale: str, row: str, column: str, seed: int,
            variant: str | None = None, reading: str | None = None) -> pathlib.Path:
    """The one layout of a cell's run: <scale_dir>/<row>/<column>/seed<k>, and of a sweep's point
    of it: .../<column>/<variant>/seed<k> (variant e.g. "sam.alpha=0.2")."""
    cell = scale_dir(runs, table, scale, reading) / row / column
    return (cell / variant if variant else cell) / f"seed{seed}"


def render_stem(table: str, scale: str, reading: str | None = None) -> str:
    """A render's file name without suffix: <table>_<scale>, or <table>_<scale>_<reading>."""
    return f"{table}_{scale}" if reading in (None, PAPER) else f"{table}_{scale}_{reading}"


def renders_dir(runs) -> pathlib.Path:
    """Where a runs folder's rendered tables and figures go: <runs>/renders, beside the runs they
    show (the committed evidence's renders are evidence/renders), never inside the packages."""
    return pathlib.Path(runs) / "renders"


METRIC_KINDS = ("accuracy", "time", "throughput")
HARDWARE_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs" / "hardware"
# A table's `plot:` section (results/figures.py draws it): its kinds and the keys any kind reads.
PLOT_TYPES = ("scatter", "heatmap", "lines", "bars", "curves", "diagnostics", "landscape")
PLOT_KEYS = ("type", "title", "x", "y", "xlabel", "ylabel", "x_values", "metric", "series", "cells", "panels",
             "connect", "annotate", "normalise", "points_from", "ratio_to", "tags", "paper_curves", "cmap",
             "zoom", "dir", "xscale", "yscale")


def _plot(raw, where) -> dict:
    plot = raw or {}
    if not isinstance(plot, dict):
        raise ValueError(f"{where}: plot must be a mapping, got {plot!r}")
    if "type" in plot and plot["type"] not in PLOT_TYPES:
        raise ValueError(f"{where}: plot type {plot['type']!r}; one of {PLOT_TYPES}")
    unknown = sorted(set(plot) - set(PLOT_KEYS))
    if unknown:
        raise ValueError(f"{where}: plot has unknown key(s) {unknown}; allowed {sorted(PLOT_KEYS)}")
    return plot


@dataclasses.dataclass(frozen=True)
class PaperHardware:
    """What a paper's stated speeds ran on: a hardware profile (configs/hardware/) and how many."""
    profile: str
    chips: Any  # an int, or column id -> int (LookSAM Table 5: one slice per batch size)
    basis: str  # the sentence or inference it rests on

    def chips_of(self, cell: Cell) -> int:
        return self.chips[cell.column] if isinstance(self.chips, dict) else self.chips


def _paper_hardware(raw, columns, where) -> PaperHardware | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"profile", "chips", "basis"}:
        raise ValueError(f"{where}: paper_hardware needs exactly profile, chips and basis; got {raw!r}")
    if not (HARDWARE_DIR / f"{raw['profile']}.yaml").is_file():
        raise ValueError(f"{where}: paper_hardware profile {raw['profile']!r} is not in configs/hardware/")
    chips = raw["chips"]
    counts = chips.values() if isinstance(chips, dict) else [chips]
    if isinstance(chips, dict) and set(chips) != {c["id"] for c in columns}:
        raise ValueError(f"{where}: paper_hardware chips by column must name every column id "
                         f"{[c['id'] for c in columns]}")
    if not all(isinstance(n, int) and n > 0 for n in counts):
        raise ValueError(f"{where}: paper_hardware chips must be positive integers; got {chips!r}")
    return PaperHardware(raw["profile"], chips, raw["basis"])


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


CLAIM_OPS = (">", ">=", "~")
CLAIM_AXES = ("column", "row")
CLAIM_KEYS = {"id", "quote", "section", "axis", "lhs", "op", "rhs", "metric", "factor", "tolerance",
              "tolerance_reason", "within", "by_design", "paper_note"}


@dataclasses.dataclass(frozen=True)
class Claim:
    """'lhs op factor * rhs' on `metric`, for each pair of cells (lhs, x) and (rhs, x)."""

    id: str
    quote: str
    section: str
    axis: str  # column: lhs/rhs are columns, x runs over rows; row: the other way round
    lhs: str
    op: str
    rhs: str
    metric: str
    factor: float = 1.0
    tolerance: float | None = None
    tolerance_reason: str | None = None
    within: tuple[str, ...] | None = None
    by_design: str | None = None
    paper_note: str | None = None

    def pairs(self, table) -> list[tuple[str, Cell, Cell]]:
        """(x, lhs cell, rhs cell) for every x of the other axis where both cells exist."""
        cells = {c.id: c for c in table.cells}
        others = [r["id"] for r in (table.rows if self.axis == "column" else table.columns)]
        out = []
        for x in others:
            if self.within is not None and x not in self.within:
                continue
            ids = ([f"{x}/{self.lhs}", f"{x}/{self.rhs}"] if self.axis == "column"
                   else [f"{self.lhs}/{x}", f"{self.rhs}/{x}"])
            if all(i in cells for i in ids):
                out.append((x, cells[ids[0]], cells[ids[1]]))
        return out


def _claim(raw, metrics, rows, columns, where) -> Claim:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a claim is a mapping; got {raw!r}")
    where = f"{where} claim {raw.get('id')!r}"
    unknown = set(raw) - CLAIM_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(CLAIM_KEYS)}")
    missing = {"id", "quote", "section", "axis", "lhs", "op", "rhs", "metric"} - set(raw)
    if missing:
        raise ValueError(f"{where}: missing {sorted(missing)}")
    if raw["axis"] not in CLAIM_AXES:
        raise ValueError(f"{where}: axis {raw['axis']!r}; one of {CLAIM_AXES}")
    if raw["op"] not in CLAIM_OPS:
        raise ValueError(f"{where}: unknown operator {raw['op']!r}; one of {CLAIM_OPS}")
    if raw["metric"] not in {m.key for m in metrics}:
        raise ValueError(f"{where}: unknown metric {raw['metric']!r}; the table's metrics are "
                         f"{[m.key for m in metrics]}")
    ids, others = ((columns, rows) if raw["axis"] == "column" else (rows, columns))
    ids, others = [i["id"] for i in ids], [i["id"] for i in others]
    for side in ("lhs", "rhs"):
        if raw[side] not in ids:
            raise ValueError(f"{where}: unknown cell {side}={raw[side]!r}: no {raw['axis']} with "
                             f"that id; choose one of {ids}")
    bad = sorted(set(raw.get("within") or []) - set(others))
    if bad:
        raise ValueError(f"{where}: unknown cell(s) in within: {bad}; choose from {others}")
    if (raw["op"] == "~") != ("tolerance" in raw):
        raise ValueError(f"{where}: a tolerance goes with '~' and only with it")
    if "tolerance" in raw and (not raw.get("tolerance_reason") or float(raw["tolerance"]) < 0):
        raise ValueError(f"{where}: a tolerance needs a non-negative value and tolerance_reason")
    return Claim(id=str(raw["id"]), quote=str(raw["quote"]), section=str(raw["section"]),
                 axis=raw["axis"], lhs=raw["lhs"], op=raw["op"], rhs=raw["rhs"],
                 metric=raw["metric"], factor=float(raw.get("factor", 1.0)),
                 tolerance=None if "tolerance" not in raw else float(raw["tolerance"]),
                 tolerance_reason=raw.get("tolerance_reason"),
                 within=None if raw.get("within") is None else tuple(raw["within"]),
                 by_design=raw.get("by_design"), paper_note=raw.get("paper_note"))


def _claims(raw, metrics, rows, columns, where) -> tuple[Claim, ...]:
    if "claims" not in raw:
        raise ValueError(f"{where}: no `claims:`; list the paper's statements about the table, or "
                         "write `claims: []` with a one-line `claims_reason:`")
    items = raw["claims"] or []
    if not items and not raw.get("claims_reason"):
        raise ValueError(f"{where}: `claims: []` needs a one-line `claims_reason:`")
    claims = tuple(_claim(c, metrics, rows, columns, where) for c in items)
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{where}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return claims


@dataclasses.dataclass(frozen=True)
class Override:
    set: str  # a Hydra override, applied after every cell's own
    cite: str  # where the source says so: file and line of the authors' code, or the sentence


@dataclasses.dataclass(frozen=True)
class Reading:
    name: str
    label: str
    source: str
    overrides: tuple[Override, ...]


READING_KEYS = {"label", "source", "overrides"}


def _reading(name, raw, where) -> Reading:
    if isinstance(raw, str):  # a shared file: reproduce/readings/<raw>.yaml
        path = READINGS_DIR / f"{raw}.yaml"
        if not path.exists():
            raise ValueError(f"{where}: reading {name!r} names {path}, which does not exist; "
                             f"shared readings: {sorted(p.stem for p in READINGS_DIR.glob('*.yaml'))}")
        where, raw = f"{where} (reading {name!r} from {path})", OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(raw, dict) or set(raw) != READING_KEYS:
        got = sorted(raw) if isinstance(raw, dict) else raw
        raise ValueError(f"{where}: reading {name!r} needs exactly the keys {sorted(READING_KEYS)}; "
                         f"got {got}")
    overrides = []
    for item in raw["overrides"] or []:
        if not isinstance(item, dict) or set(item) != {"set", "cite"} or "=" not in str(item["set"]):
            raise ValueError(f"{where}: reading {name!r}: each override is {{set: KEY=VALUE, cite: ...}} "
                             f"(the citation says where the source does it); got {item!r}")
        key = item["set"].split("=", 1)[0]
        if not _schema_has(key):
            raise ValueError(f"{where}: reading {name!r} sets unknown key {key!r}: no such config "
                             "group or setting (looksam/config.py)")
        overrides.append(Override(set=str(item["set"]), cite=str(item["cite"])))
    if not overrides:
        raise ValueError(f"{where}: reading {name!r} has no overrides: it would be the paper's")
    return Reading(name=name, label=str(raw["label"]), source=str(raw["source"]),
                   overrides=tuple(overrides))


@functools.cache
def _schema():
    from looksam import config  # the schema; registry files are checked against it on load

    return OmegaConf.structured(config.Config)


def _schema_has(key: str) -> bool:
    """Whether an override's key names a config group (sam) or a setting of one (sam.m)."""
    node = _schema()
    *groups, leaf = key.split(".")
    for part in groups:
        if part not in node or not OmegaConf.is_dict(node[part]):
            return False
        node = node[part]
    return leaf in node


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
    claims: tuple[Claim, ...] = ()
    claims_reason: str | None = None
    readings: tuple[Reading, ...] = ()  # declared besides the paper's
    reading: Reading | None = None  # the one these cells run (None: the paper's)
    paper_hardware: PaperHardware | None = None

    @property
    def reading_name(self) -> str | None:
        """None for the paper's reading (the layout's and every render's default), else its name."""
        return self.reading.name if self.reading else None

    def reading_names(self) -> list[str]:
        return [PAPER] + [r.name for r in self.readings]

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(f"{self.id} has no cell {cell_id!r}; its cells are "
                       + ", ".join(c.id for c in self.cells))

    def label(self, axis: str, item_id: str) -> str:
        items = self.rows if axis == "row" else self.columns
        return next(i["label"] for i in items if i["id"] == item_id)


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


def load(table_id: str, directory: pathlib.Path = TABLES_DIR, reading: str | None = None) -> Table:
    """The table as `reading` runs it (None or "paper": as the paper's text gives it)."""
    table = _load(table_id, directory)
    if reading in (None, PAPER):
        return table
    chosen = next((r for r in table.readings if r.name == reading), None)
    if chosen is None:
        raise ValueError(f"{table_id} has no reading {reading!r}; its readings are "
                         f"{table.reading_names()} ({directory / (table_id + '.yaml')})")
    extra = [o.set for o in chosen.overrides]
    cells = tuple(dataclasses.replace(c, overrides=merge_overrides(c.overrides, extra))
                  for c in table.cells)
    return dataclasses.replace(table, cells=cells, reading=chosen)


def _load(table_id: str, directory: pathlib.Path) -> Table:
    path = directory / f"{table_id}.yaml"
    if not path.exists():
        raise ValueError(f"unknown table {table_id!r}; choose one of {names(directory)}")
    try:  # OmegaConf's loader refuses a key given twice in one mapping (PyYAML keeps the last)
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: {e}") from None
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
    readings = tuple(_reading(name, value, where) for name, value in (raw.get("readings") or {}).items())
    if PAPER in {r.name for r in readings}:
        raise ValueError(f"{where}: {PAPER!r} is the reading of the cells themselves; name the others")
    base = raw.get("base_column")
    if base is not None and base not in {c["id"] for c in columns}:
        raise ValueError(f"{where}: base_column {base!r} is not a column id")
    return Table(id=table_id, kind=raw.get("kind", "table"), paper_name=raw["paper_name"],
                 source=raw["source"], title=raw["title"], caption=raw.get("caption", ""),
                 hardware=raw.get("hardware", "not stated"),
                 paper_time=raw.get("paper_time", "not stated"), seeds=int(raw.get("seeds", 1)),
                 base_column=base, metrics=metrics, overrides=tuple(raw.get("overrides", [])),
                 rows=rows, columns=columns, cells=tuple(cells), plot=_plot(raw.get("plot"), where),
                 notes=tuple(raw.get("notes") or []),
                 claims=_claims(raw, metrics, rows, columns, where),
                 claims_reason=raw.get("claims_reason"), readings=readings,
                 paper_hardware=_paper_hardware(raw.get("paper_hardware"), columns, where))


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
