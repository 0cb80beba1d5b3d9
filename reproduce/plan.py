"""`python -m reproduce plan TABLE|all`: every cell's train step compiled at its real size, and what
that means on a given piece of hardware.

For each cell of a table at `--scale` (default `paper`), its composed config (reproduce/compose.py)
is compiled from abstract shapes over `--devices` devices (simulated CPU devices here; nothing is
allocated, no data is read: looksam/plan.py). Per cell the plan prints FLOPs per image (the mean
over the schedule's period), the ratio to its row's base column (the table's `base_column`), the
bytes per device and whether they fit `--hardware`'s memory, and the hours of one seed (epochs x
the training set, at `--mfu` of the hardware's peak for the model's dtype, on `--devices` of its
chips); then the table's total over the paper's seeds.

Compilation is cached in `reproduce/plan_cache.json`, one entry per distinct program: keyed by the
composed config (seed, logger, paths, epochs and the values that enter as constants aside:
`cache_key`), the device count and jax's minor version, so a second call is instant and a fresh
clone reads the committed entries. Hardware profiles (peaks, memory, sources) are in
configs/hardware/.

    python -m reproduce plan esam_table1 [--hardware tpu_v3] [--devices 8] [--mfu 0.4]
    python -m reproduce plan all --hardware h100 --devices 8
    python -m reproduce plan looksam_table5 --per-device-batch 32   # the papers' TPU v3 slices
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import sys

import yaml

from reproduce import compose, registry

HARDWARE_DIR = registry.HARDWARE_DIR
CACHE_FILE = pathlib.Path(__file__).with_name("plan_cache.json")
DEFAULT_HARDWARE, DEFAULT_MFU = "tpu_v3", 0.4  # the LookSAM papers' chip; a common utilisation
DEFAULT_DEVICES = 8  # a TPU v3-8 / one 8-GPU node: what `make list-tables` and the README read
CPU_DEVICES = 2  # the CPU scales' programs, as this 2-core machine runs them (`make list-tables`)
# Settings that do not change the compiled program: each run's own seed, where it logs and reads,
# how long it runs (the schedule's length is a constant in the step), how often it evaluates.
NOT_COMPILED = {"trainer": ("seed", "workdir", "epochs", "max_steps", "eval_batch_size", "eval_every_epochs",
                            "log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "nan_policy"),
                "data": ("data_dir", "download", "shuffle_buffer", "mock_examples", "input_shards"),
                "logger": None, "distributed": None, "table": None, "cell": None, "variant": None,
                "reading": None}
# Values that enter the step only as constants: the same program, FLOPs and bytes (ESAM Figure 3's
# beta grid, LookSAM Tables 6-7's alpha and rho, each k > 1 of SAM-k / LookSAM-k: one compile each).
CONSTANTS = {"sam": ("rho", "alpha", "beta"), "optimizer": ("lr", "base_batch"),
             "schedule": ("init_lr", "end_lr")}


def device_count(cfg: dict, devices: int, per_device_batch: int | None = None) -> int:
    """The devices a cell's batch is spread over: `devices`, or its batch / per_device_batch
    (LookSAM's Section 4.4: 32 examples per TPU v3 chip at every batch size, 128 to 1024 chips)."""
    if per_device_batch is None:
        return devices
    batch = cfg["trainer"]["batch_size"]
    if batch % per_device_batch:
        raise ValueError(f"--per-device-batch {per_device_batch} does not divide a batch of {batch}")
    return max(batch // per_device_batch, 1)


def hardware_names() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


def hardware(name: str) -> dict:
    path = HARDWARE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"--hardware {name!r}: choose one of {hardware_names()} (configs/hardware/)")
    profile = yaml.safe_load(path.read_text())
    profile["id"] = name
    return profile


def cache_key(cfg: dict, devices: int) -> str:
    """The compiled program's key: the composed config without what does not compile
    (`NOT_COMPILED`) or enters as a constant (`CONSTANTS`; k only as whether a plain or reuse step
    exists, k > 1), with the device count, jax's minor version and looksam.plan.PROGRAM_VERSION."""
    import jax

    kept = {}
    for group, value in cfg.items():
        if group in NOT_COMPILED and NOT_COMPILED[group] is None:
            continue
        drop = (*NOT_COMPILED.get(group, ()), *CONSTANTS.get(group, ()))
        kept[group] = {k: v for k, v in value.items() if k not in drop} if isinstance(value, dict) else value
    kept["sam"]["k"] = min(kept["sam"]["k"], 2)
    # jax's minor version: a patch release (pyproject pins >=0.10,<0.11) keeps the committed entries
    release = ".".join(jax.__version__.split(".")[:2])
    from looksam.plan import PROGRAM_VERSION

    text = json.dumps({"config": kept, "devices": devices, "jax": release, "program": PROGRAM_VERSION},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_cache(path: pathlib.Path = CACHE_FILE) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to compile afresh") from None


def save_cache(cache: dict, path: pathlib.Path = CACHE_FILE) -> None:
    """Adds `cache` to the file's entries: a plan running beside another keeps the other's too."""
    merged = {**load_cache(path), **cache}
    cache.update(merged)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # a plan stopped half-way never leaves a torn cache


def _cell_figures(program: dict, cfg: dict) -> dict:
    """The cell's figures from its program's: its own period, ideal cost and epochs."""
    from omegaconf import OmegaConf

    from looksam import config, plan

    if "error" in program:
        return program
    est = config.validated_estimator(OmegaConf.create(cfg))
    return plan.cell_figures(program, est, cfg["trainer"]["epochs"])


def compile_cells(table, scale: str, devices: int, cache: dict, progress=print, saved=lambda: None,
                  per_device_batch: int | None = None) -> dict:
    """Cell id -> the compiled figures (looksam.plan.cell_figures) and its device count, or
    {"error": text} for a cell that does not compile (never cached); compiles only the programs
    `cache` lacks, adds them there and calls saved() after each (a plan stopped half-way keeps what
    it compiled). Each cell runs on `device_count(cfg, devices, per_device_batch)` devices."""
    from omegaconf import OmegaConf

    from looksam import plan

    configs = compose.configs(table.cells, scale)
    out = {}
    for i, (cell, cfg) in enumerate(zip(table.cells, configs, strict=True)):
        n = device_count(cfg, devices, per_device_batch)
        key = cache_key(cfg, n)
        if key not in cache:
            progress(f"{table.id}: compiling {cell.id} ({i + 1}/{len(table.cells)}) at {scale} size "
                     f"on {n} devices")
            cfg["trainer"]["num_devices"] = n
            try:
                cache[key] = plan.compile_cell(OmegaConf.create(cfg))
            except Exception as e:  # noqa: BLE001 - a cell that cannot compile is a finding, not a crash
                # not cached: the cause may be a setting outside the key (an eval batch that does
                # not divide over the devices), and a fixed cell must compile afresh
                out[cell.id] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                continue
            saved()
        out[cell.id] = _cell_figures(cache[key], cfg) | {"devices": n}
    return out


def planned(table, scale: str, devices: int, cache: dict, per_device_batch: int | None = None) -> dict | None:
    """Cell id -> the cell's figures when every cell's program is in `cache`, else None."""
    figures = {cell.id: _cached_figures(cfg, device_count(cfg, devices, per_device_batch), cache)
               for cell, cfg in zip(table.cells, compose.configs(table.cells, scale), strict=True)}
    return None if any(f is None for f in figures.values()) else figures


def planned_cell(cell, scale: str, devices: int, cache: dict) -> dict | None:
    """One cell's figures from `cache` (None: its program is not there)."""
    return _cached_figures(compose.config(cell, scale), devices, cache)


def _cached_figures(cfg: dict, devices: int, cache: dict) -> dict | None:
    entry = cache.get(cache_key(cfg, devices))
    return None if entry is None else _cell_figures(entry, cfg) | {"devices": devices}


def table_hours(table, compiled: dict, profile: dict, mfu: float) -> tuple[float, int]:
    """(hours of the paper's seeds of every cell that compiles, the number that do not)."""
    table_rows = rows(table, compiled, profile, mfu)
    return (sum(r["hours"] for r in table_rows if not r["error"]) * table.seeds,
            sum(bool(r["error"]) for r in table_rows))


def seconds_per_seed(entry: dict, profile: dict, devices: int, mfu: float) -> float:
    steps = math.ceil(entry["epochs"] * entry["train_examples"] / entry["batch_size"])
    peak = profile["peak_tflops"][entry["dtype"]] * 1e12
    return entry["flops_per_step"] * steps / (devices * peak * mfu)


def rows(table, compiled: dict, profile: dict, mfu: float) -> list[dict]:
    out = []
    for cell in table.cells:
        entry = compiled[cell.id]
        row = {"cell": cell.id, "error": entry.get("error")}
        if row["error"] is None:
            base = compiled.get(f"{cell.row}/{table.base_column}") if table.base_column else None
            row.update(gflops_per_image=entry["flops_per_image"] / 1e9,
                       ratio=(entry["flops_per_image"] / base["flops_per_image"]
                              if base and not base.get("error") else None),
                       ideal=entry["ideal_cost"], gib_per_device=entry["bytes_per_device"] / 2**30,
                       fits=entry["bytes_per_device"] <= profile["memory_gib"] * 2**30,
                       hours=seconds_per_seed(entry, profile, entry["devices"], mfu) / 3600,
                       batch=entry["batch_size"], dtype=entry["dtype"], devices=entry["devices"])
        out.append(row)
    return out


def text(table, table_rows: list[dict], profile: dict, devices: str, mfu: float, scale: str) -> list[str]:
    """`devices`: what the cells ran on, in words ("8", "batch / 32")."""
    lines = [f"{table.id} at {scale} size on {devices} x {profile['name']} at {mfu:.0%} of peak "
             f"(paper: {table.hardware}; {table.paper_time})",
             f"  {'cell':34} {'GFLOP/img':>10} {'x base':>7} {'ideal':>6} {'devices':>7} {'GiB/dev':>8} "
             f"{'fits':>5} {'h/seed':>8}"]
    for r in table_rows:
        if r["error"]:
            lines.append(f"  {r['cell']:34} does not compile: {r['error']}")
            continue
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"  {r['cell']:34} {r['gflops_per_image']:10.2f} {ratio:>7} {r['ideal']:6.2f} "
                     f"{r['devices']:7d} {r['gib_per_device']:8.2f} {'yes' if r['fits'] else 'NO':>5} "
                     f"{r['hours']:8.2f}")
    total = sum(r["hours"] for r in table_rows if not r["error"]) * table.seeds
    lines.append(f"  total: {total:.1f} h for {table.seeds} seed(s) of every cell that compiles")
    return lines


# A paper's speed metric in images/s and back, from the cell's figures (e = the plan's entry).
TO_IMAGES_PER_SEC = {"images_per_sec": lambda v, e: v,
                     "seconds_per_epoch": lambda v, e: e["train_examples"] / v,
                     "total_seconds": lambda v, e: e["epochs"] * e["train_examples"] / v}


def paper_speeds(table, compiled: dict, mfu: float) -> list[dict]:
    """Each cell with a stated speed (a time or throughput metric's paper value) against the plan:
    the images/s it implies, the TFLOP/s that is at the compiled FLOPs per image, the utilisation
    of the paper's hardware (where `paper_hardware` says what it was), the figure predicted there
    at `mfu`, and the cell's step-time ratio to its row's base column, the paper's against the
    compiled FLOPs'."""
    hw = table.paper_hardware
    profile = hardware(hw.profile) if hw else None
    speeds = {}  # cell id -> the cell, its speed metric, the paper's value, its plan, images/s
    for cell in table.cells:
        entry = compiled.get(cell.id) or {"error": "not planned"}
        for metric, value in zip(table.metrics, cell.paper, strict=True):
            if metric.key in TO_IMAGES_PER_SEC and isinstance(value, int | float) and "error" not in entry:
                images_per_sec = TO_IMAGES_PER_SEC[metric.key](value / metric.scale, entry)
                speeds[cell.id] = dict(cell=cell, metric=metric, value=value, entry=entry,
                                       images_per_sec=images_per_sec)
    out = []
    for cell_id, speed in speeds.items():
        cell, metric, entry = speed["cell"], speed["metric"], speed["entry"]
        images_per_sec = speed["images_per_sec"]
        base = speeds.get(f"{cell.row}/{table.base_column}") if table.base_column else None
        row = {"cell": cell_id, "metric": metric, "paper": speed["value"], "images_per_sec": images_per_sec,
               "tflops": images_per_sec * entry["flops_per_image"] / 1e12,
               "paper_ratio": base["images_per_sec"] / images_per_sec if base else None,
               "flops_ratio": entry["flops_per_image"] / base["entry"]["flops_per_image"] if base else None,
               "chips": None, "mfu": None, "predicted": None}
        if hw:
            row["chips"] = hw.chips_of(cell)
            peak = row["chips"] * profile["peak_tflops"][entry["dtype"]]
            row["mfu"] = row["tflops"] / peak
            predicted_ips = peak * 1e12 * mfu / entry["flops_per_image"]
            # the metric back from images/s: each conversion is its own inverse in v <-> images/s
            row["predicted"] = TO_IMAGES_PER_SEC[metric.key](predicted_ips, entry) * metric.scale
        out.append(row)
    return out


def speeds_text(table, speeds: list[dict], mfu: float) -> list[str]:
    if not speeds:
        return []
    hw = table.paper_hardware
    where = (f"on {hardware(hw.profile)['name']}s ({hw.basis})" if hw
             else "hardware not stated: the TFLOP/s it implies only")
    lines = [f"  the paper's speeds against the plan, {where}",
             f"  {'cell':34} {'paper':>16} {'images/s':>9} {'TFLOP/s':>8} {'chips':>6} {'MFU':>6} "
             f"{f'at {mfu:.0%}':>16} {'x base: paper':>13} {'FLOPs':>6}"]

    def shown(v, metric):
        return f"{format(v, metric.format)} {metric.label}"

    for r in speeds:
        m = r["metric"]
        paper_ratio, flops_ratio = (("—", "—") if r["paper_ratio"] is None
                                    else (f"{r['paper_ratio']:.2f}", f"{r['flops_ratio']:.2f}"))
        chips = "—" if r["chips"] is None else str(r["chips"])
        utilisation = "—" if r["mfu"] is None else f"{r['mfu']:.0%}"
        predicted = "—" if r["predicted"] is None else shown(r["predicted"], m)
        lines.append(f"  {r['cell']:34} {shown(r['paper'], m):>16} {r['images_per_sec']:9,.0f} "
                     f"{r['tflops']:8.1f} {chips:>6} {utilisation:>6} {predicted:>16} {paper_ratio:>13} "
                     f"{flops_ratio:>6}")
    return lines


def make_target(table_id: str) -> str:
    """The Makefile's target for a table id (looksam_table1 -> reproduce-table1, esam_figure3 ->
    reproduce-esam-figure3, looksam_iclr_cifar10 -> reproduce-table-cifar10)."""
    if table_id == "looksam_iclr_cifar10":
        return "reproduce-table-cifar10"
    return "reproduce-" + table_id.removeprefix("looksam_").replace("_", "-")


def _span(values, fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def markdown(tables, cache: dict, profile: dict, devices: int, mfu: float) -> list[str]:
    """The README's table of tables: one line per table, its plan at paper size from `cache`
    (nothing is compiled) and the paper's stated speeds against it."""
    lines = [f"| command | reproduces | cells x seeds | at paper size: GFLOP/image, GiB/device, hours "
             f"on {devices} x {profile['name']} at {mfu:.0%} | the paper's speeds against the plan |",
             "|---|---|---:|---|---|"]
    # LookSAM's before ESAM's, tables before figures: the papers' own order
    for table in sorted(tables, key=lambda t: (t.id.startswith("esam"), t.kind != "table", t.id)):
        head = (f"| `make {make_target(table.id)}` | {table.paper_name} {table.source}: {table.title} | "
                f"{len(table.cells)} x {table.seeds} |")
        compiled = planned(table, "paper", devices, cache)
        if compiled is None:
            lines.append(f"{head} not planned yet (`python -m reproduce plan {table.id}`) | |")
            continue
        table_rows = [r for r in rows(table, compiled, profile, mfu) if not r["error"]]
        broken = len(table.cells) - len(table_rows)
        hours = sum(r["hours"] for r in table_rows) * table.seeds
        plan_text = (f"{_span([r['gflops_per_image'] for r in table_rows], '.3g')}; "
                     f"{_span([r['gib_per_device'] for r in table_rows], '.2f')}"
                     f"{'' if all(r['fits'] for r in table_rows) else ' (some do not fit)'}; {hours:.1f} h"
                     + (f"; {broken} do not compile" if broken else ""))
        speeds = paper_speeds(table, compiled, mfu)
        if not speeds:
            speed_text = "none stated"
        elif table.paper_hardware:
            chips = "/".join(str(n) for n in sorted({r["chips"] for r in speeds}))
            speed_text = (f"implied MFU {_span([100 * r['mfu'] for r in speeds], '.0f')}% on {chips} x "
                          f"{hardware(table.paper_hardware.profile)['name']}")
        else:
            speed_text = (f"implied {_span([r['tflops'] for r in speeds], '.1f')} TFLOP/s "
                          "(hardware not stated)")
        ratios = [r for r in speeds
                  if r["paper_ratio"] is not None and r["cell"].split("/")[1] != table.base_column]
        if ratios:
            speed_text += (f"; step time x base: paper {_span([r['paper_ratio'] for r in ratios], '.2f')}, "
                           f"FLOPs {_span([r['flops_ratio'] for r in ratios], '.2f')}")
        lines.append(f"{head} {plan_text} | {speed_text} |")
    return lines


def main(args) -> int:
    profile = hardware(args.hardware)
    if not 0 < args.mfu <= 1:
        raise ValueError(f"--mfu {args.mfu}: a fraction of the peak, in (0, 1]")
    if args.markdown:
        tables = [registry.load(n) for n in (registry.names() if args.table == "all" else [args.table])]
        print("\n".join(markdown(tables, load_cache(), profile, args.devices, args.mfu)))
        return 0
    names = registry.names() if args.table == "all" else [args.table]
    cache = load_cache()
    status = 0
    on = args.devices if args.per_device_batch is None else f"batch / {args.per_device_batch}"
    for name in names:
        table = registry.load(name)
        compiled = compile_cells(table, args.scale, args.devices, cache,
                                 progress=lambda s: print(s, file=sys.stderr, flush=True),
                                 saved=lambda: save_cache(cache), per_device_batch=args.per_device_batch)
        table_rows = rows(table, compiled, profile, args.mfu)
        status |= any(r["error"] for r in table_rows)
        lines = text(table, table_rows, profile, on, args.mfu, args.scale)
        if args.scale == "paper":
            lines += speeds_text(table, paper_speeds(table, compiled, args.mfu), args.mfu)
        print("\n".join(lines) + "\n")
    return 1 if status else 0


def most_devices(names: list[str], scale: str, devices: int, per_device_batch: int | None) -> int:
    """The host devices the compilations need (set before JAX starts): the largest cell's count."""
    if per_device_batch is None:
        return devices
    return max(device_count(cfg, devices, per_device_batch)
               for name in names for cfg in compose.configs(registry.load(name).cells, scale))
