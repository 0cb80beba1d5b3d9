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
`cache_key`), the device count and the jax version, so a second call is instant and a fresh
clone reads the committed entries. Hardware profiles (peaks, memory, sources) are in
configs/hardware/.

    python -m reproduce plan esam_table1 [--hardware tpu_v3] [--devices 8] [--mfu 0.4]
    python -m reproduce plan all --hardware h100 --devices 8
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import sys

import yaml

from reproduce import compose, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARDWARE_DIR = ROOT / "configs" / "hardware"
CACHE_FILE = pathlib.Path(__file__).with_name("plan_cache.json")
DEFAULT_HARDWARE, DEFAULT_MFU = "tpu_v3", 0.4  # the LookSAM papers' chip; a common utilisation
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
    exists, k > 1), with the device count and the jax version."""
    import jax

    kept = {}
    for group, value in cfg.items():
        if group in NOT_COMPILED and NOT_COMPILED[group] is None:
            continue
        drop = (*NOT_COMPILED.get(group, ()), *CONSTANTS.get(group, ()))
        kept[group] = {k: v for k, v in value.items() if k not in drop} if isinstance(value, dict) else value
    kept["sam"]["k"] = min(kept["sam"]["k"], 2)
    text = json.dumps({"config": kept, "devices": devices, "jax": jax.__version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_cache(path: pathlib.Path = CACHE_FILE) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to compile afresh") from None


def save_cache(cache: dict, path: pathlib.Path = CACHE_FILE) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # a plan stopped half-way never leaves a torn cache


def _cell_figures(program: dict, cfg: dict) -> dict:
    """The cell's figures from its program's: its own period, ideal cost and epochs."""
    from omegaconf import OmegaConf

    from looksam import config, plan

    if "error" in program:
        return program
    est = config.validated_estimator(OmegaConf.create(cfg))
    return plan.cell_figures(program, est, cfg["trainer"]["epochs"])


def compile_cells(table, scale: str, devices: int, cache: dict, progress=print, saved=lambda: None) -> dict:
    """Cell id -> the compiled figures (looksam.plan.cell_figures), or {"error": text} for a cell
    that does not compile; compiles only the programs `cache` lacks, adds them there and calls
    saved() after each (a plan stopped half-way keeps what it compiled)."""
    from omegaconf import OmegaConf

    from looksam import plan

    configs = compose.configs(table.cells, scale)
    out = {}
    for i, (cell, cfg) in enumerate(zip(table.cells, configs, strict=True)):
        key = cache_key(cfg, devices)
        if key not in cache:
            progress(f"{table.id}: compiling {cell.id} ({i + 1}/{len(table.cells)}) at {scale} size "
                     f"on {devices} devices")
            cfg["trainer"]["num_devices"] = devices
            try:
                cache[key] = plan.compile_cell(OmegaConf.create(cfg))
            except Exception as e:  # noqa: BLE001 - a cell that cannot compile is a finding, not a crash
                cache[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            saved()
        out[cell.id] = _cell_figures(cache[key], cfg)
    return out


def planned(table, scale: str, devices: int, cache: dict) -> dict | None:
    """Cell id -> the cell's figures when every cell's program is in `cache`, else None."""
    configs = compose.configs(table.cells, scale)
    keys = [cache_key(cfg, devices) for cfg in configs]
    if not all(k in cache for k in keys):
        return None
    return {cell.id: _cell_figures(cache[k], cfg)
            for cell, cfg, k in zip(table.cells, configs, keys, strict=True)}


def table_hours(table, compiled: dict, profile: dict, devices: int, mfu: float) -> tuple[float, int]:
    """(hours of the paper's seeds of every cell that compiles, the number that do not)."""
    table_rows = rows(table, compiled, profile, devices, mfu)
    return (sum(r["hours"] for r in table_rows if not r["error"]) * table.seeds,
            sum(bool(r["error"]) for r in table_rows))


def seconds_per_seed(entry: dict, profile: dict, devices: int, mfu: float) -> float:
    steps = math.ceil(entry["epochs"] * entry["train_examples"] / entry["batch_size"])
    peak = profile["peak_tflops"][entry["dtype"]] * 1e12
    return entry["flops_per_step"] * steps / (devices * peak * mfu)


def rows(table, compiled: dict, profile: dict, devices: int, mfu: float) -> list[dict]:
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
                       hours=seconds_per_seed(entry, profile, devices, mfu) / 3600,
                       batch=entry["batch_size"], dtype=entry["dtype"])
        out.append(row)
    return out


def text(table, table_rows: list[dict], profile: dict, devices: int, mfu: float, scale: str) -> list[str]:
    lines = [f"{table.id} at {scale} size on {devices} x {profile['name']} at {mfu:.0%} of peak "
             f"(paper: {table.hardware}; {table.paper_time})",
             f"  {'cell':34} {'GFLOP/img':>10} {'x base':>7} {'ideal':>6} {'GiB/dev':>8} {'fits':>5} "
             f"{'h/seed':>8}"]
    for r in table_rows:
        if r["error"]:
            lines.append(f"  {r['cell']:34} does not compile: {r['error']}")
            continue
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"  {r['cell']:34} {r['gflops_per_image']:10.2f} {ratio:>7} {r['ideal']:6.2f} "
                     f"{r['gib_per_device']:8.2f} {'yes' if r['fits'] else 'NO':>5} {r['hours']:8.2f}")
    total = sum(r["hours"] for r in table_rows if not r["error"]) * table.seeds
    lines.append(f"  total: {total:.1f} h for {table.seeds} seed(s) of every cell that compiles")
    return lines


def main(args) -> int:
    profile = hardware(args.hardware)
    if not 0 < args.mfu <= 1:
        raise ValueError(f"--mfu {args.mfu}: a fraction of the peak, in (0, 1]")
    names = registry.names() if args.table == "all" else [args.table]
    cache = load_cache()
    status = 0
    for name in names:
        table = registry.load(name)
        compiled = compile_cells(table, args.scale, args.devices, cache,
                                 progress=lambda s: print(s, file=sys.stderr, flush=True),
                                 saved=lambda: save_cache(cache))
        table_rows = rows(table, compiled, profile, args.devices, args.mfu)
        status |= any(r["error"] for r in table_rows)
        print("\n".join(text(table, table_rows, profile, args.devices, args.mfu, args.scale)) + "\n")
    return 1 if status else 0
