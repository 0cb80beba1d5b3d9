"""Drivers behind `make reproduce-*` and `make list-tables`.

    python -m reproduce list                          # every table: cells, paper hardware/time, estimates
    python -m reproduce plan esam_table1|all [--hardware tpu_v3] [--devices 8] [--mfu 0.4]
    python -m reproduce config esam_table1 resnet18_cifar10/esam [--scale cpu] [--seed 1] [--overrides]
    python -m reproduce run looksam_table1 --scale cpu [--seeds 3] [--launcher basic] [--runs DIR]
                                                       [--reading code] [-o data.data_dir=DIR ...]

`run` turns a registry table into one Hydra multirun of `python -m looksam.train` over the (cell,
seed) pairs that have not completed yet: each pending pair becomes a generated config
(`<runs>/<table>/<scale>/.cells/reproduce_cell/<row>__<column>__seed<k>.yaml`, `# @package
_global_`, holding the cell's overrides) and the sweep runs `+reproduce_cell=<a>,<b>,...` with
every job's directory at `<runs>/<table>/<scale>/<row>/<column>/seed<k>` (a reading other than
the paper's: `<runs>/<table>/<scale>/reading-<name>/...`, registry.scale_dir); each job's wandb
group, name, job type and tags follow from its config (looksam.tracking.run_labels, docs/wandb.md).
A rerun after a crash therefore runs only what is missing (and an interrupted cell resumes from
its checkpoint). Then it renders the table with `python -m results render`.

`config` prints a cell's composed config at a scale (reproduce/compose.py), the one `run` trains
it with; `--overrides` prints the cell's Hydra overrides instead, to train it with
`python -m looksam.train` directly.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile

import yaml

from looksam import summary as summary_file
from reproduce import compose, plan, registry

# Hydra's config groups: an override of one of these selects a file, anything else sets a value.
GROUPS = ("model", "data", "optimizer", "sam", "schedule", "trainer", "logger", "scale", "experiment")
SMOKE_SECONDS_PER_CELL = 20


def run_dir(runs: pathlib.Path, table: registry.Table, scale: str, cell: registry.Cell, seed: int,
            variant: str | None = None) -> pathlib.Path:
    return registry.run_dir(runs, table.id, scale, cell.row, cell.column, seed, variant,
                            table.reading_name)


def quoted(override: str) -> str:
    """A forwarded override as Hydra's multirun parser reads it: a value with characters of its
    grammar ([, ], %, commas...) quoted, so what works for one run works for a table."""
    key, sep, value = override.partition("=")
    if not sep or value[:1] in ("'", '"') or re.fullmatch(r"[\w.\-/+:@]*", value):
        return override
    return f"{key}='{value}'" if "'" not in value else f'{key}="{value}"'


def sweep_points(sweeps: list[str]) -> list[tuple[str | None, list[str]]]:
    """--sweep KEY=V1,V2 (repeatable) -> [(variant label, its overrides)], the cartesian product;
    [(None, [])] without a sweep. A group key (sam=..., model=...) cannot be swept here."""
    import itertools

    axes = []
    for sweep in sweeps:
        key, sep, values = sweep.partition("=")
        if not sep or not values or key.split(".")[0] == key:
            raise ValueError(f"--sweep {sweep!r}: need KEY=V1,V2,... with a dotted key such as "
                             "sam.alpha=0.05,0.1,0.2")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [(",".join(point), list(point)) if point else (None, [])
            for point in itertools.product(*axes)]


def checkpointed_step(path: pathlib.Path) -> int | None:
    """The newest complete checkpoint's step in a run folder (orbax marks one with
    commit_success.txt), which a rerun resumes from; None without one."""
    steps = [int(p.parent.name) for p in path.glob("checkpoints/*/commit_success.txt")
             if p.parent.name.isdigit()]
    return max(steps, default=None)


def run_passing_interrupts(command: list[str]) -> tuple[int, int]:
    """(exit code, Ctrl-Cs seen) of `command`, with Ctrl-C left to it: the terminal signals the
    whole foreground job, so the trainer sees each Ctrl-C itself (the first: checkpoint at the end
    of the step; the second: stop at once), and this process only waits for it to exit instead of
    dying with a KeyboardInterrupt traceback and leaving it behind."""
    seen = 0

    def on_interrupt(signum, frame):
        nonlocal seen
        seen += 1
        print("Ctrl-C: the running cell saves a checkpoint at the end of its step" if seen == 1 else
              "Ctrl-C again: the running cell stops at once", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with subprocess.Popen(command) as proc:
            return proc.wait(), seen
    finally:
        signal.signal(signal.SIGINT, previous)


def completed(path: pathlib.Path) -> bool:
    summary = summary_file.read(path)
    return summary is not None and summary.status == "completed"


def cell_config(table: registry.Table, cell: registry.Cell, seed: int, variant: str | None = None,
                extra: tuple[str, ...] = ()) -> str:
    """The cell as a global config: group overrides in the defaults list, values below; `extra`:
    a sweep point's overrides on top of the cell's."""
    defaults, values = [], {"table": table.id, "cell": cell.id, "trainer": {"seed": seed}}
    if table.reading_name:
        values["reading"] = table.reading_name
    if variant:
        values["variant"] = variant
    for override in registry.merge_overrides(cell.overrides, extra):
        key, _, value = override.partition("=")
        if key in GROUPS:
            defaults.append({f"override /{key}": value})
            continue
        node = values
        *parents, leaf = key.lstrip("+").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        # Typed by the schema on merge: "5e-4" becomes a float in a float field.
        node[leaf] = yaml.safe_load(value)
    return "# @package _global_\n" + yaml.safe_dump({"defaults": defaults, **values}, sort_keys=False)


def cell_cost(cell: registry.Cell) -> float:
    """The method's ideal cost in forward+backward passes per step (none = 1), from the estimator
    of the cell's composed config (reproduce/compose.py)."""
    return compose.estimator(cell).ideal_cost


def committed_runs(evidence_dir):
    """(table, scale, cell id, summary) of every completed run of the paper's reading in a runs
    folder (<table>/<scale>/<row>/<column>/seed<k>/summary.json); a reading's runs lie one level
    deeper and are left out."""
    for path in sorted(pathlib.Path(evidence_dir).glob(f"*/*/*/*/seed*/{summary_file.FILE}")):
        summary = summary_file.read(path.parent)
        if summary.status == "completed":
            table, scale, row, column = path.parts[-6:-2]
            yield table, scale, f"{row}/{column}", summary


def sgd_reference(evidence_dir) -> dict[str, float]:
    """Seconds per training image of the committed SGD-M ResNet-18 runs (the cpu presets' width),
    their median over runs, and the images of one such run at each scale that has one."""
    rates, images = [], {}
    for _, _, _, s in committed_runs(evidence_dir):
        c = s.get("config") or {}
        if (s.get("evidence_from")  # a shared copy counts once
                or c.get("sam", {}).get("method") != "none" or c.get("model", {}).get("name") != "resnet18"):
            continue
        batch = c["trainer"]["batch_size"]
        rates.append(s["total_seconds"] / (s["step"] * batch))
        images[c["scale"]["name"]] = s["step"] * batch
    if not rates:
        return {}
    return {"seconds_per_image": sorted(rates)[len(rates) // 2], "runs": len(rates), **images}


def measured_seconds(evidence_dir) -> dict[tuple[str, str], dict[str, float]]:
    """(table, scale) -> cell id -> the mean wall seconds of its committed runs (a shared copy
    carries its original's time: the same cell run once)."""
    times: dict = {}
    for table, scale, cell, s in committed_runs(evidence_dir):
        times.setdefault((table, scale), {}).setdefault(cell, []).append(s["total_seconds"])
    return {k: {c: sum(v) / len(v) for c, v in cells.items()} for k, cells in times.items()}


def cpu_flops_rate(evidence_dir, cache: dict) -> dict[str, float]:
    """The FLOP/s this machine's committed runs reached: per run (a shared copy counts once), its
    cell's FLOPs per image in the plan at the cpu scale (over plan.CPU_DEVICES devices) x the
    images it trained / its wall seconds; their median and number ({} without a planned run)."""
    rates = []
    for table_id, _, cell_id, s in committed_runs(evidence_dir):
        batch = ((s.get("config") or {}).get("trainer") or {}).get("batch_size")
        if s.get("evidence_from") or not batch or not s.get("total_seconds"):
            continue
        try:
            cell = registry.load(table_id).cell(cell_id)
        except (ValueError, KeyError):  # a table or cell the registry no longer has
            continue
        figures = plan.planned_cell(cell, "cpu", plan.CPU_DEVICES, cache)
        if figures is not None and "error" not in figures:
            rates.append(figures["flops_per_image"] * s["step"] * batch / s["total_seconds"])
    if not rates:
        return {}
    return {"flops_per_second": sorted(rates)[len(rates) // 2], "runs": len(rates)}


def scale_images(scale: str, reference: dict) -> int | None:
    """Training images one ResNet-18 run sees at a scale: measured where a committed run has it,
    else epochs x CIFAR-10's 50,000 for a scale that trains on the whole split."""
    from omegaconf import OmegaConf

    from looksam.data import pipeline

    if scale in reference:
        return reference[scale]
    preset = OmegaConf.load(registry.SCALES_DIR / f"{scale}.yaml")
    if preset.get("train_split") or preset.get("mock") or "epochs" not in preset:
        return None
    return int(preset.epochs * pipeline.spec("cifar10").train_examples)




def list_source(counts: dict[str, int], cells: int) -> str:
    """How a scale's hours were had: "measured: 3 of 18 cells' committed runs, 15 planned"."""
    rest = {k: counts[k] for k in ("planned", "estimated") if counts[k]}
    if not counts["measured"]:  # one kind alone is named without its count
        return next(iter(rest)) if len(rest) == 1 else ", ".join(f"{n} {k}" for k, n in rest.items())
    measured = f"measured: {counts['measured']} of {cells} cells' committed runs"
    if list(rest) == ["estimated"]:
        return f"{measured}, the rest estimated"
    return ", ".join([measured, *(f"{n} {k}" for k, n in rest.items())])


def cmd_list(args) -> int:
    cache, profile = plan.load_cache(), plan.hardware(plan.DEFAULT_HARDWARE)
    reference = sgd_reference(registry.EVIDENCE_DIR)
    measured_cells = measured_seconds(registry.EVIDENCE_DIR)
    tables = list(registry.all_tables().values())
    cells = [c for t in tables for c in t.cells]
    compose.configs(cells), compose.configs(cells, "cpu")  # all of them in one Hydra context each
    rate = cpu_flops_rate(registry.EVIDENCE_DIR, cache)
    if reference:
        planned = (f"else planned, the cell's FLOPs per image in the plan at the cpu scale "
                   f"(python -m reproduce plan TABLE --scale cpu --devices {plan.CPU_DEVICES}) at the "
                   f"median {rate['flops_per_second'] / 1e9:.1f} GFLOP/s that {rate['runs']} committed "
                   "run(s) reached on 2 CPU cores; " if rate else "")
        print(f"Hours per scale: cpu and afternoon are measured, the mean wall time of each cell's "
              f"committed runs (evidence/) times the paper's seeds, where a cell has them; {planned}"
              f"else estimated, its method's cost (forward+backward passes per step) x the median "
              f"{1 / reference['seconds_per_image']:.0f} images/s of {reference['runs']} committed "
              f"SGD-M ResNet-18 (width 16) run(s) on 2 CPU cores (other models differ). paper: the "
              f"plan's compiled FLOPs (python -m reproduce plan).\n")
    for table in tables:
        print(f"{table.id:<22} {table.paper_name} {table.source}: {len(table.cells)} cells x "
              f"{table.seeds} seed(s)")
        print(f"    paper: {table.hardware}; {table.paper_time}")
        ours = []
        # both CPU scales train the cpu preset's programs: each cell's plan, looked up once
        cpu_plan = {c.id: plan.planned_cell(c, "cpu", plan.CPU_DEVICES, cache) if rate else None
                    for c in table.cells}
        for scale in ("cpu", "afternoon"):
            # a cell's committed runs where it has them, else its method's cost x the SGD-M reference
            measured = measured_cells.get((table.id, scale), {})
            images = scale_images(scale, reference) if reference else None
            if not images and not measured:
                continue
            seconds, counts = 0.0, {"measured": 0, "planned": 0, "estimated": 0}
            for cell in table.cells:
                figures = cpu_plan[cell.id] if images else None  # None without a FLOP/s rate
                if cell.id in measured:
                    seconds += measured[cell.id]
                    counts["measured"] += 1
                elif figures is not None and "error" not in figures:
                    seconds += figures["flops_per_image"] * images / rate["flops_per_second"]
                    counts["planned"] += 1
                elif images:
                    seconds += cell_cost(cell) * images * reference["seconds_per_image"]
                    counts["estimated"] += 1
            source = list_source(counts, len(table.cells))
            ours.append(f"SCALE={scale} ~{seconds * table.seeds / 3600:.1f} h ({source})")
        ours.append(f"SCALE=smoke ~{len(table.cells) * table.seeds * SMOKE_SECONDS_PER_CELL / 60:.0f} min")
        compiled = plan.planned(table, "paper", plan.DEFAULT_DEVICES, cache)
        if compiled is None:
            ours.append(f"SCALE=paper: not planned yet (python -m reproduce plan {table.id})")
        else:
            hours, broken = plan.table_hours(table, compiled, profile, plan.DEFAULT_MFU)
            ours.append(f"SCALE=paper ~{hours:.1f} h on {plan.DEFAULT_DEVICES} x {profile['name']} at "
                        f"{plan.DEFAULT_MFU:.0%} of peak (reproduce plan)"
                        + (f", {broken} cell(s) do not compile" if broken else ""))
        print(f"    ours:  {'; '.join(ours)}")
    return 0


def cmd_config(args) -> int:
    table = registry.load(args.table, reading=args.reading)
    cell = table.cell(args.cell)
    if args.overrides:
        extra = ([f"scale={args.scale}"] if args.scale else []) + (
            [f"trainer.seed={args.seed}"] if args.seed is not None else [])
        print(" ".join([*cell.overrides, *extra]))
        return 0
    cfg = compose.config(cell, args.scale or "paper", args.seed or 0)
    labels = {"table": table.id, "cell": cell.id,
              **({"reading": table.reading_name} if table.reading else {})}
    print(yaml.safe_dump({**cfg, **labels}, sort_keys=False), end="")
    return 0


# Set on every worker of a TPU pod or task of a SLURM step; worker 0 writes the shared files.
WORKER_ID_VARIABLES = ("TPU_WORKER_ID", "CLOUD_TPU_TASK_ID", "SLURM_PROCID")


def secondary_worker(environ=os.environ) -> bool:
    """One of the other workers of a multi-process sweep (the TPU pod script runs this driver on
    every worker). Only worker 0 writes the generated cell configs and Hydra's files (.hydra/,
    job logs, multirun.yaml) into the shared runs directory, since a gcsfuse mount refuses the
    same file written from several machines at once; the others keep theirs in a local temporary
    directory and train in the same shared run directories."""
    return any(environ.get(v, "0") not in ("", "0") for v in WORKER_ID_VARIABLES)


def cmd_run(args) -> int:
    table = registry.load(args.table, reading=args.reading)
    runs = pathlib.Path(args.runs).resolve()
    seeds = args.seeds or table.seeds
    cells = [table.cell(c) for c in args.cells] if args.cells else list(table.cells)
    points = sweep_points(args.sweep)
    pending = [(c, s, v, extra) for c in cells for v, extra in points for s in range(seeds)
               if not completed(run_dir(runs, table, args.scale, c, s, v))]
    total = len(cells) * seeds * len(points)
    sweep_text = f" x {len(points)} sweep point(s)" if args.sweep else ""
    reading = f" in the {table.reading_name} reading" if table.reading_name else ""
    resuming = {(c.id, s, v): step for c, s, v, _ in pending
                if (step := checkpointed_step(run_dir(runs, table, args.scale, c, s, v))) is not None}
    print(f"{table.id}{reading} at scale={args.scale}: {len(cells)} cells{sweep_text} x {seeds} seed(s); "
          f"{total - len(pending)} completed, {len(pending)} to run"
          + (f" ({len(resuming)} resuming)" if resuming else ""), flush=True)
    for (cell_id, seed, variant), step in resuming.items():
        where = f"{cell_id}/{variant}" if variant else cell_id
        print(f"resuming {where} seed {seed} from step {step}", flush=True)
    if pending:
        shared = registry.scale_dir(runs, table.id, args.scale, table.reading_name)
        local = pathlib.Path(tempfile.mkdtemp(prefix="reproduce-")) if secondary_worker() else None
        gen = (local or shared) / ".cells"
        (gen / "reproduce_cell").mkdir(parents=True, exist_ok=True)
        names = []
        for i, (cell, seed, variant, extra) in enumerate(pending):
            name = f"{cell.row}__{cell.column}__seed{seed}" + (f"__point{i}" if variant else "")
            (gen / "reproduce_cell" / f"{name}.yaml").write_text(
                cell_config(table, cell, seed, variant, tuple(extra)))
            names.append(name)
        # registry.run_dir's layout, as Hydra interpolations of each job's config.
        layout = "${cell}/" + ("${variant}/" if args.sweep else "") + "seed${trainer.seed}"
        command = [sys.executable, "-m", "looksam.train", "-m", f"+reproduce_cell={','.join(names)}",
                   f"scale={args.scale}",
                   f"hydra.searchpath=[file://{gen}]",
                   f"hydra.sweep.dir={local or shared}",
                   f"hydra.sweep.subdir={layout}"]
        if local:
            command.append(f"trainer.workdir={shared}/{layout}")
        if args.launcher != "basic":
            command.append(f"hydra/launcher={args.launcher}")
        if args.wandb:
            command.append(f"logger.wandb_mode={args.wandb}")
        command += [quoted(o) for o in args.overrides]
        print("+ " + " ".join(shlex.quote(c) for c in command), flush=True)
        if args.dry_run:
            return 0
        code, interrupts = run_passing_interrupts(command)
        if interrupts or code == 128 + signal.SIGINT:
            finished = [f"{c.id}{'/' + v if v else ''}/seed{s}" for c, s, v, _ in pending
                        if completed(run_dir(runs, table, args.scale, c, s, v))]
            print(f"interrupted: {len(finished)} of {len(pending)} pending run(s) finished"
                  + (f" ({', '.join(finished)})" if finished else "")
                  + "; rerun the same command to resume the rest from their checkpoints",
                  file=sys.stderr, flush=True)
            return 128 + signal.SIGINT
        if code:
            print(f"the sweep exited with {code}; rendering what finished", flush=True)
    if args.dry_run:
        return 0
    unfinished = [f"{c.id}{'/' + v if v else ''}/seed{s}" for c, s, v, _ in pending
                  if not completed(run_dir(runs, table, args.scale, c, s, v))]
    code = 0
    if args.sweep:
        where = registry.scale_dir(runs, table.id, args.scale, table.reading_name)
        print(f"a sweep's points are not table cells: see them with\n  python -m results sweep {where}")
    elif not args.no_render:
        code = subprocess.call([sys.executable, "-m", "results", "render", table.id, "--runs",
                                str(runs), "--scale", args.scale,
                                *(["--reading", table.reading_name] if table.reading_name else []),
                                "--out",
                                args.out or str(registry.renders_dir(runs))])
    if unfinished:  # what finished is rendered; the command still says that not all of it did
        print(f"{len(unfinished)} run(s) did not complete: {', '.join(unfinished)} (their "
              "summary.json says why; rerun the same command to retry only those)", file=sys.stderr)
        return 1
    return code


def cmd_plan(args) -> int:
    from looksam import host_devices

    if args.per_device_batch is not None and args.per_device_batch < 1:
        print(f"error: --per-device-batch {args.per_device_batch}: at least 1", file=sys.stderr)
        return 2
    names = registry.names() if args.table == "all" else [args.table]
    try:
        needed = plan.most_devices(names, args.scale, args.devices, args.per_device_batch)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    flag = host_devices.FLAG
    if flag in os.environ.get("XLA_FLAGS", ""):
        set_to = int(re.search(rf"{flag}=(\d+)", os.environ["XLA_FLAGS"]).group(1))
        if set_to < needed:
            print(f"error: XLA_FLAGS sets {set_to} host devices, fewer than the {needed} the plan "
                  "compiles over: unset it or raise it", file=sys.stderr)
            return 2
    else:  # before JAX starts: the compilation spreads the batch over that many CPU devices
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={needed}".strip()
    try:
        return plan.main(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: the cells compiled so far are kept in {plan.CACHE_FILE}; rerun to go on",
              file=sys.stderr)
        return 130


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every table with its cell count, paper hardware/time, estimates")
    c = sub.add_parser("config", help="print a cell's composed config: what `run` trains it with")
    c.add_argument("table", choices=registry.names())
    c.add_argument("cell", metavar="ROW/COLUMN")
    c.add_argument("--scale", default=None, choices=registry.scale_names(), help="default: paper")
    c.add_argument("--seed", type=int, default=None, help="default: 0")
    c.add_argument("--reading", default=None, help="one of the table's readings (default: the paper's)")
    c.add_argument("--overrides", action="store_true",
                   help="print the cell's Hydra overrides (on one line) instead, for "
                        "python -m looksam.train $(python -m reproduce config ... --overrides)")
    r = sub.add_parser("run", help="run a table's pending cells, then render it")
    r.add_argument("table", choices=registry.names())
    r.add_argument("--scale", default="paper", choices=registry.scale_names())
    r.add_argument("--seeds", type=int, default=None, help="default: the paper's (ESAM: 3)")
    r.add_argument("--launcher", default="basic",
                   help="Hydra launcher: basic, submitit_slurm, submitit_local, or slurm (configs/)")
    r.add_argument("--wandb", default=None, choices=["online", "offline", "disabled"])
    r.add_argument("--runs", default=os.environ.get("RUNS", "runs/reproduce"))
    r.add_argument("--out", default=None,
                   help="where rendered tables and figures go (default: <runs>/renders)")
    r.add_argument("--reading", default=None,
                   help="run the cells as one of the table's readings (e.g. code: the authors' code; "
                        "default: the paper's); its runs go to <runs>/<table>/<scale>/reading-<name>")
    r.add_argument("--cells", nargs="+", action="extend", default=None,
                   help="only these row/column cells")
    r.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="run every chosen cell at each value (repeatable: the product), each point "
                        "in its own run folder <cell>/<KEY=V>/seed<k>; e.g. --sweep sam.alpha=0.1,0.2")
    r.add_argument("--dry-run", action="store_true", help="print the sweep command only")
    r.add_argument("--no-render", action="store_true")
    r.add_argument("-o", "--override", dest="overrides", action="append", default=[],
                   help="an extra Hydra override for every cell (repeatable), e.g. -o data.data_dir=DIR")
    pl = sub.add_parser("plan", help="every cell compiled at its real size: FLOPs, memory and time "
                                     "on given hardware (reproduce/plan.py)")
    pl.add_argument("table", choices=["all", *registry.names()])
    pl.add_argument("--scale", default="paper", choices=registry.scale_names())
    pl.add_argument("--hardware", default=plan.DEFAULT_HARDWARE,
                    help=f"a profile of configs/hardware/ (default: {plan.DEFAULT_HARDWARE}, the LookSAM "
                         "papers' chip)")
    pl.add_argument("--devices", type=int, default=plan.DEFAULT_DEVICES,
                    help="chips of --hardware the batch is spread over (simulated CPU devices for "
                         "the compilation; default 8)")
    pl.add_argument("--per-device-batch", type=int, default=None,
                    help="spread each cell's batch over batch / N devices instead of --devices (32: "
                         "LookSAM Section 4.4's 32 examples per TPU v3 chip, 128 to 1024 chips)")
    pl.add_argument("--mfu", type=float, default=plan.DEFAULT_MFU,
                    help=f"model-FLOPs utilisation assumed for the time (default {plan.DEFAULT_MFU})")
    pl.add_argument("--markdown", action="store_true",
                    help="print one Markdown line per table from the cache, compiling nothing (the "
                         "README's table of tables)")
    args = p.parse_args(argv)
    if args.command == "list":
        return cmd_list(args)
    if args.command == "plan":
        return cmd_plan(args)
    try:
        return (cmd_config if args.command == "config" else cmd_run)(args)
    except (ValueError, KeyError) as e:  # a bad --sweep or cell id: one line that names the fix
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
