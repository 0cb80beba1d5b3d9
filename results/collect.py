"""Reads the runs of one table into per-cell results: status, per-seed values, mean and std.

Local layout: `<runs>/<table id>/<scale>/<row id>/<column id>/seed<k>/summary.json`. A seed
directory without summary.json is "running" when the trainer has started in it (`checkpoints/` or
`.hydra/`), else "missing"; no directory is "missing". `<runs>/<table id>/<scale>/throughput.json`
(`read_throughput`), when there is one, gives each cell's side-by-side images/s per round, and
each throughput-<variant>.json beside it the same for a variant (e.g. the full-width model).
`collect_wandb` reads the same structure from a wandb project (runs grouped
`<table>/<scale>[/<reading>]`, or by table id alone as before that grouping); no throughput.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence

from looksam import summary as summary_file
from looksam import tracking
from looksam.summary import RunSummary
from reproduce import registry

STATUSES = ("completed", "diverged", "failed", "preempted", "running", "missing")
# Aggregate status of a cell: completed only when every seed is; otherwise the worst seed's.
WORST_FIRST = ("failed", "diverged", "preempted", "running", "missing")
# Always collected besides the table's own metrics: the throughput comparison needs them.
EXTRA_KEYS = ("best_test_accuracy", "final_test_accuracy", "final_train_loss", "images_per_sec",
              "images_per_sec_per_device", "seconds_per_epoch", "total_seconds")


@dataclasses.dataclass(frozen=True)
class CellResult:
    status: str  # aggregate over seeds
    seeds: dict[str, str]  # seed name ("seed0") -> its status
    values: dict[str, list[float]]  # metric key -> values of the completed seeds that have one
    mean: dict[str, float | None]
    std: dict[str, float | None]  # sample std (ddof 1) over seeds; None for fewer than two values
    summaries: tuple[RunSummary, ...] = ()  # summary.json of each completed seed (config, cost)
    messages: dict[str, str] = dataclasses.field(default_factory=dict)  # seed -> failure message
    # images/s of each round of the side-by-side measurement (throughput.json); () without one
    throughput: tuple[float, ...] = ()
    # the same from each throughput-<variant>.json (e.g. full-width): variant -> rounds
    throughput_variants: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)

    @property
    def n_completed(self) -> int:
        return sum(s == "completed" for s in self.seeds.values())


# A summary value at a dotted key, and as a measurement: the one reading of summaries
# (looksam/summary.py), here for the wandb configs and throughput files read alike.
lookup, number = summary_file.lookup, summary_file.measurement


def aggregate_status(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if statuses and all(s == "completed" for s in statuses):
        return "completed"
    for s in WORST_FIRST:
        if s in statuses:
            return s
    return "missing"


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1) over seeds: the one spread every table, claim and sweep shows."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell_result(seeds: Mapping[str, tuple[str, Mapping | None]], keys: Iterable[str]) -> CellResult:
    """seeds: seed name -> (status, summary or None), a summary a RunSummary or a plain mapping.
    Values come from completed seeds only."""
    completed = [summary if isinstance(summary, RunSummary) else RunSummary(summary)
                 for status, summary in seeds.values() if status == "completed" and summary]
    values, mean, std = {}, {}, {}
    for key in keys:
        values[key] = [v for v in (s.number(key) for s in completed) if v is not None]
        mean[key], std[key] = mean_std(values[key])
    messages = {name: str(summary.get("message")) for name, (status, summary) in seeds.items()
                if status != "completed" and summary and summary.get("message")}
    return CellResult(status=aggregate_status(s for s, _ in seeds.values()),
                      seeds={name: status for name, (status, _) in seeds.items()},
                      values=values, mean=mean, std=std, summaries=tuple(completed), messages=messages)


def metric_keys(table) -> tuple[str, ...]:
    return tuple(dict.fromkeys([m.key for m in table.metrics] + list(EXTRA_KEYS)))


# ---- local run directories -------------------------------------------------------------------

def _seed_order(path: pathlib.Path):
    match = re.fullmatch(r"seed(\d+)", path.name)
    return (0, int(match.group(1)), "") if match else (1, 0, path.name)


def read_seed(seed_dir: pathlib.Path) -> tuple[str, RunSummary | None]:
    summary = summary_file.read(seed_dir)
    if summary is not None:
        return summary.status, summary
    if (seed_dir / "checkpoints").is_dir() or (seed_dir / ".hydra").is_dir():
        return "running", None
    return "missing", None


def collect(table, runs_dir, scale: str = "cpu") -> dict[str, CellResult]:
    """Cell id -> CellResult for every cell of `table`, from `<runs_dir>/<table>/<scale>/...`."""
    keys = metric_keys(table)
    results = {}
    for cell in table.cells:
        cell_dir = registry.run_dir(runs_dir, table.id, scale, cell.row, cell.column, 0,
                                    reading=table.reading_name).parent
        seed_dirs = sorted((p for p in cell_dir.glob("seed*") if p.is_dir()), key=_seed_order)
        results[cell.id] = cell_result({p.name: read_seed(p) for p in seed_dirs}, keys)
    scale_dir = registry.scale_dir(runs_dir, table.id, scale, table.reading_name)
    for cell_id, values in read_throughput(scale_dir).items():
        if cell_id in results:
            results[cell_id] = dataclasses.replace(results[cell_id], throughput=values)
    for variant in throughput_variants(scale_dir):
        for cell_id, values in read_throughput(scale_dir, variant).items():
            if cell_id in results:
                results[cell_id].throughput_variants[variant] = values
    return results


THROUGHPUT_FILE = "throughput.json"  # written by `python -m results record --throughput`


def throughput_file(variant: str | None = None) -> str:
    """throughput.json (the scale's own cells: claims read it), or throughput-<variant>.json (the
    cells with extra overrides, e.g. the full-width model: shown beside it, judges nothing)."""
    return THROUGHPUT_FILE if variant is None else f"throughput-{variant}.json"


def throughput_variants(scale_dir) -> list[str]:
    """The variants measured in scale_dir (throughput-<variant>.json), sorted."""
    prefix, suffix = "throughput-", ".json"
    found = pathlib.Path(scale_dir).glob(f"{prefix}*{suffix}")
    return sorted(p.name[len(prefix):-len(suffix)] for p in found)


def read_throughput(scale_dir, variant: str | None = None) -> dict[str, tuple[float, ...]]:
    """Cell id -> images/s of each round, from <scale_dir>/throughput[-variant].json
    (looksam/throughput.py); empty without that file. An unreadable file is an error: it must not
    pass for no measurement."""
    path = pathlib.Path(scale_dir) / throughput_file(variant)
    if not path.is_file():
        return {}
    try:
        cells = json.loads(path.read_text())["cells"]
        return {cell_id: tuple(v for v in (number(x) for x in cell["images_per_sec"]) if v is not None)
                for cell_id, cell in cells.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"unreadable {path}: {e!r}") from e


# ---- wandb -----------------------------------------------------------------------------------

def _config_value(config: Mapping, dotted: str):
    # wandb keeps our nested config as is, but a flattened "trainer.seed" key is accepted too.
    if dotted in config:
        return config[dotted]
    value = lookup(config, dotted)
    return value.get("value") if isinstance(value, Mapping) and "value" in value else value


def _wandb_status(summary: Mapping, state: str | None) -> str:
    status = summary.get("status")
    if status in STATUSES:
        return status
    return {"running": "running", "pending": "running", "finished": "completed"}.get(state, "failed")


def wandb_filters(table, scale: str) -> dict:
    """The wandb API filter of a table's runs at a scale: its group `<table>/<scale>[/<reading>]`
    (looksam.tracking.group_name), or the table id alone (runs made before that grouping)."""
    return {"$or": [{"group": tracking.group_name(table.id, scale, table.reading_name)},
                    {"group": table.id}]}


def collect_wandb(table, path: str, scale: str = "cpu", api=None) -> dict[str, CellResult]:
    """As `collect`, from the wandb project `path` ("entity/project"): the runs `wandb_filters`
    finds, of the table's scale and reading (a run's config says which)."""
    if api is None:
        try:
            import wandb  # seconds to import, and only for --wandb: loaded when asked for

            api = wandb.Api(timeout=30)
        except Exception as e:  # noqa: BLE001 - no key, no network: say so, do not trace back
            raise RuntimeError(f"cannot reach the wandb API for {path!r}: {type(e).__name__}: {e}") from e
    try:
        runs = list(api.runs(path, filters=wandb_filters(table, scale)))
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"cannot list wandb runs of {path!r} (table {table.id}): "
                           f"{type(e).__name__}: {e}") from e
    per_cell: dict[str, dict[str, tuple[str, dict]]] = {}
    for run in runs:
        config = dict(run.config or {})
        summary = dict(getattr(run.summary, "_json_dict", None) or run.summary or {})
        if _config_value(config, "table") not in (None, table.id):
            continue
        run_scale = _config_value(config, "scale.name")
        if run_scale is not None and run_scale != scale:
            continue
        if _config_value(config, "reading") != table.reading_name:  # a table-id group holds every reading
            continue
        cell = _config_value(config, "cell") or summary.get("cell")
        if not cell:
            continue
        seed = _config_value(config, "trainer.seed")
        seed = seed if seed is not None else _config_value(config, "seed")
        summary = RunSummary({"config": config, **summary})
        seeds = per_cell.setdefault(cell, {})
        # A seed run again (after a failure) appears twice: a completed one wins.
        if seeds.get(f"seed{seed}", ("",))[0] != "completed":
            seeds[f"seed{seed}"] = (_wandb_status(summary, getattr(run, "state", None)), summary)
    keys = metric_keys(table)
    return {c.id: cell_result(per_cell.get(c.id, {}), keys) for c in table.cells}
