#!/usr/bin/env python
"""The trainer end to end against the compiled step it runs, method by method, back to back.

For each method of `--methods` (labels and hyper-parameters: scripts/bench_methods.py's METHODS)
and each of `--rounds` rounds, in one process:

  (a) the trainer: the config composed with Hydra from configs/ as a user's run composes it
      (`model=resnet18 scale=cpu sam=<method> sam.<hp>=<value> ...`), `--steps` training steps,
      run by `looksam.train.run(cfg, workdir)` into a temporary workdir; its images/s is the
      summary's `images_per_sec` (the trainer's MetricsWindow: wall time of the training steps
      between host syncs, input included; compilation, evaluation and checkpointing left out);
  (b) the benchmark: the same model, optimizer, estimator, batch and mesh, built from the same
      composed config through `train.initial_state`, `train.make_train_step` and
      `train.compile_steps` (compiled once per method, before the first round), timed for the
      same `--steps` steps on one fixed device batch, `block_until_ready` at the end (as
      scripts/bench_methods.py times it).

The methods rotate order every round and each round's trainer and benchmark of a method run one
after the other, so both see the same load on a shared machine. The table gives, per method, the
median images/s of each, their ratio (trainer / benchmark), the median over rounds of each one's
step-time ratio to `none` within the round, and the estimator's ideal ratio (`ideal_cost`).

Evaluation: the overrides add `scale.eval_every_epochs=1e9`, so the run evaluates once, after its
last step (the trainer always evaluates then), never inside the timed steps; at scale=cpu on real
CIFAR-10 an epoch is 390 steps, so 200 steps would not have evaluated anyway. Checkpointing:
`trainer.checkpoint_every_steps` (1000) is above --steps, so the only save is the final one, after
the clock stops. Mock data (`--data mock`): `data.mock=true` with `scale.mock_examples` set to
whole batches enough for --steps within the preset's epochs. Real data (`--data real`): CIFAR-10
through the TFDS pipeline from `--data-dir`; `--eval-split` (default `test[:1000]`) shortens the
final, untimed evaluation.

The host device count is chosen before JAX starts exactly as the trainer chooses it
(`looksam.host_devices.configure` on the composed config), unless `--host-devices N` or XLA_FLAGS
sets it, so the trainer and the benchmark run on the same devices.

`--breakdown` adds, after the rounds, one instrumented trainer run per method (not in the
medians; `--rounds 0` for breakdowns only) that reports, window by window (a window ends at each
host sync: every `trainer.log_every_steps` steps), where the wall time goes: building the input
pipeline, `next(batches)` (tf.data or numpy plus the host-to-device transfer), dispatching the
compiled steps, clu's progress report, the wait for the device at the sync, the rest of the host
loop, and the process CPU time against the benchmark's for the same steps. It joins the run as a
hook of the trainer's loop (looksam/hooks.py: `train.run(cfg, workdir, hooks=[Breakdown()])`),
timing the loop's named phases; nothing of the trainer is replaced.

    python scripts/bench_trainer.py --data real --data-dir ../shared/data/tfds   # 200 steps x 3 rounds
    python scripts/bench_trainer.py --data mock --methods none sam --steps 50 --rounds 1
    python scripts/bench_trainer.py --data real --data-dir ../shared/data/tfds --rounds 0 --breakdown
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import importlib.util
import json
import logging
import math
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def _bench_methods():
    """scripts/bench_methods.py as a module (scripts/ is not a package): its METHODS table."""
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "scripts" / "bench_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_methods = _bench_methods()
# The trainer dispatches SAM steps from the host: only the labels without an in-graph mode run.
TRAINER_METHODS = [label for label, (_, _, in_graph) in bench_methods.METHODS.items() if in_graph is None]
DEFAULT = ["none", "sam", "sam_k-5", "looksam-5"]
# Acceptance (issue 10, item 4): trainer images/s within 10% of the benchmark's, and the trainer's
# step-time ratio to `none` within 5% of the ideal. Read one-sided (at most 5% above it): the item
# asks the trainer to add no cost of its own, and a ratio below the ideal is a step cheaper than
# its compute-only estimate (SAM's compiled step is 1.67x the plain one), not an overhead. The
# two-sided test is printed beside it.
IMAGES_TOLERANCE, RATIO_TOLERANCE = 0.10, 0.05


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=DEFAULT, choices=TRAINER_METHODS)
    p.add_argument("--model", default="resnet18", help="config group model=<name> (default resnet18)")
    p.add_argument("--scale", default="cpu", help="config group scale=<name> (default cpu)")
    p.add_argument("--steps", type=int, default=200, help="training steps per run and per benchmark block")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", choices=("mock", "real"), default="real")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir for --data real (data.data_dir)")
    p.add_argument("--eval-split", default="test[:1000]",
                   help="--data real: data.eval_split of the final, untimed evaluation ('' keeps the "
                        "config's, the whole test split)")
    p.add_argument("--logger", default="default",
                   help="config group logger=<name> (default: the user's default, TensorBoard + wandb)")
    p.add_argument("--override", "-o", action="append", default=[],
                   help="a further Hydra override for both (repeatable), e.g. trainer.log_every_steps=200")
    p.add_argument("--bench-warmup", type=int, default=None,
                   help="untimed benchmark steps after compiling (default: one period of each method, "
                        "at least 5)")
    p.add_argument("--host-devices", type=int, default=None,
                   help="CPU devices for both (default: the trainer's own choice, host_devices.py)")
    p.add_argument("--compilation-cache", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache in DIR: the trainer's runs load the "
                        "benchmark's compiled steps instead of compiling them again (compilation is "
                        "outside both timings either way)")
    p.add_argument("--breakdown", action="store_true",
                   help="then one instrumented trainer run per method: where the wall time goes")
    p.add_argument("--keep-workdirs", action="store_true", help="keep the trainer's temporary workdirs")
    p.add_argument("--verbose", action="store_true", help="the trainer's INFO log lines")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    return p.parse_args(argv)


def method_overrides(label: str) -> list[str]:
    method, hp, _ = bench_methods.METHODS[label]
    return [f"sam={method}"] + [f"sam.{k}={v}" for k, v in hp.items()]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from looksam import config

    config.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def base_overrides(args) -> list[str]:
    out = [f"model={args.model}", f"scale={args.scale}", f"logger={args.logger}",
           f"scale.max_steps={args.steps}", "scale.eval_every_epochs=1e9"]
    if args.data == "mock":
        out.append("data.mock=true")
    else:
        out.append("data.mock=false")
        if args.data_dir:
            out.append(f"data.data_dir={args.data_dir}")
        if args.eval_split:
            out.append(f"data.eval_split='{args.eval_split}'")
    return out


def run_overrides(args, label: str) -> list[str]:
    """The Hydra overrides of one method's run (the same for the trainer and the benchmark)."""
    from looksam import config

    overrides = base_overrides(args) + method_overrides(label) + list(args.override)
    cfg = config.scaled_config(compose(overrides))
    if cfg.data.mock != (args.data == "mock"):  # the preset sets data.mock (scale=smoke)
        overrides.append(f"scale.mock={str(args.data == 'mock').lower()}")
    if args.data == "mock":  # whole batches enough for --steps within the preset's epochs
        per_epoch = max(math.ceil(args.steps / cfg.trainer.epochs), 1)
        overrides.append(f"scale.mock_examples={per_epoch * cfg.trainer.batch_size}")
    return overrides


def process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def thread_cpu() -> dict[str, float]:
    """CPU seconds of every live thread of this process, summed by thread name (Linux)."""
    out = collections.defaultdict(float)
    try:
        tick = os.sysconf("SC_CLK_TCK")
        tids = os.listdir("/proc/self/task")
    except (OSError, ValueError, AttributeError):
        return {}
    main = str(os.getpid())
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out["main thread" if tid == main else name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def cpu_delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


class Bench:
    """One method's compiled train steps from the composed config, timed on one fixed batch."""

    def __init__(self, cfg, warmup: int | None):
        import dataclasses

        import jax
        import jax.numpy as jnp
        import numpy as np

        from looksam import config, models, train

        self.jax = jax
        cfg = config.scaled_config(cfg)
        est = config.validated_estimator(cfg)
        t = cfg.trainer
        devices, replicated, sharded = train.make_mesh(t)
        inputs = train.Inputs(cfg, sharded)
        steps_per_epoch = inputs.steps_per_epoch()
        epoch_steps = math.ceil(t.epochs * steps_per_epoch)
        model = models.create(cfg.model.name, num_classes=inputs.spec.num_classes,
                              dtype=jnp.dtype(cfg.model.dtype), **cfg.model.kwargs)
        schedule, tx = train.base_optimizer(cfg, steps_per_epoch, epoch_steps)
        root_key = jax.random.key(t.seed)
        self.est = dataclasses.replace(est, batch_sharding=sharded)
        self.state = jax.device_put(
            train.initial_state(model, tx, self.est, inputs.spec.image_size, root_key), replicated)
        abstract = train.batch_shape(cfg, inputs.spec, sharded)
        rng = np.random.default_rng(0)
        image, label = abstract["image"], abstract["label"]
        labels = (rng.integers(0, inputs.spec.num_classes, label.shape).astype(label.dtype)
                  if jnp.issubdtype(label.dtype, jnp.integer) else
                  np.full(label.shape, 1 / inputs.spec.num_classes, label.dtype))
        self.batch = jax.device_put({"image": rng.standard_normal(image.shape, np.float32),
                                     "label": labels}, sharded)
        t0 = time.perf_counter()
        self.steps = train.compile_steps(train.make_train_step(model, tx, self.est, schedule, root_key),
                                         self.est, self.state, abstract)
        self.compile_s = time.perf_counter() - t0
        self.batch_size, self.devices, self.t = t.batch_size, len(devices), 0
        self.block(max(self.est.period, 5) if warmup is None else warmup)

    def block(self, n: int) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of n steps. The schedule starts over (at a multiple
        of its period), so every block takes the branches of a run's first n steps."""
        self.t = -(-self.t // self.est.period) * self.est.period
        t0, c0 = time.perf_counter(), process_cpu()
        state, metrics = self.state, None
        for _ in range(n):
            state, metrics = self.steps[self.est.is_sam_step(self.t)](state, self.batch)
            self.t += 1
        self.jax.block_until_ready(state)
        wall, cpu = time.perf_counter() - t0, process_cpu() - c0
        self.state = state
        if metrics is not None and not bool(metrics["finite"]):  # timing holds; say so
            print(f"  warning: the benchmark's state is not finite at step {self.t}", flush=True)
        return wall, cpu


def run_trainer(cfg, keep: bool, hooks=()) -> dict:
    from looksam import train

    workdir = tempfile.mkdtemp(prefix="bench_trainer_")
    try:
        summary = train.run(cfg, workdir, hooks)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        gc.collect()  # the run's input iterators (a 50,000-image shuffle buffer) go before the next
    if summary.get("status") != "completed" or not summary.get("images_per_sec"):
        sys.exit(f"trainer run {summary.get('status')}: {summary.get('message')}")
    return summary


# --- --breakdown: a hook of the trainer's loop (looksam/hooks.py) timing its phases -------------

class Breakdown:
    """Times the loop's phases per window (the steps between two host syncs, as the trainer's
    MetricsWindow counts them: from the window's first `next` to the end of its `sync`, the input's
    start left out) and the process CPU time; fills `windows` and the one-off figures."""

    STEP_PHASES = ("sam_step", "plain_step")

    def __init__(self):
        self.windows, self.first_calls_s = [], {}
        self.pipeline_build_s, self.first_batch_s = 0.0, None
        self.current = None  # the open window

    def __call__(self, step: int) -> None:
        del step  # the loop's phases say everything; `hooks` times this call with the others

    def _open(self, t: float) -> None:
        self.current = dict(start=t, cpu0=process_cpu(), threads0=thread_cpu(), steps=0, host_end=t,
                            next_s=0.0, dispatch_s=0.0, report_s=0.0)

    def _close(self, t: float) -> None:
        w, self.current = self.current, None
        self.windows.append(dict(
            steps=w["steps"], wall_s=t - w["start"], next_s=w["next_s"],
            dispatch_s=w["dispatch_s"], report_s=w["report_s"], sync_wait_s=t - w["host_end"],
            cpu_s=process_cpu() - w["cpu0"], threads=cpu_delta(thread_cpu(), w["threads0"])))

    @contextlib.contextmanager
    def timed(self, name: str):
        if name == "next" and self.current is None and self.first_batch_s is not None:
            self._open(time.perf_counter())  # a window opens with its first batch
        t0 = time.perf_counter()
        yield
        t1 = time.perf_counter()
        w = self.current
        if name == "input":
            self.pipeline_build_s += t1 - t0
        elif name == "next" and self.first_batch_s is None:  # the input's start: before the clock
            self.first_batch_s = t1 - t0
            self._open(t1)
        elif name == "next":
            w["next_s"] += t1 - t0
        elif name in self.STEP_PHASES:
            self.first_calls_s.setdefault(name, t1 - t0)
            w["dispatch_s"] += t1 - t0
            w["steps"] += 1
            w["host_end"] = t1
        elif name == "hooks":
            w["report_s"] += t1 - t0
            w["host_end"] = t1
        elif name == "sync":
            self._close(t1)
        elif name == "flush":
            self.windows[-1]["flush_s"] = t1 - t0


def print_breakdown(label: str, rec: Breakdown, summary: dict, batch: int, bench_s_per_step: float,
                    bench_cpu_per_step: float) -> dict:
    """The table of one instrumented run: per window (host sync) the wall time the trainer's
    images/s counts, the benchmark's time for as many steps, and the parts of the host loop."""
    rows = []
    print(f"\n{label}: trainer {summary['images_per_sec']:.1f} images/s, benchmark "
          f"{batch / bench_s_per_step:.1f} images/s just before it. Before window 1 (untimed: the "
          "trainer's clock starts after the first batch): building the input pipeline "
          f"{rec.pipeline_build_s:.2f} s, the first next(batches) "
          f"{rec.first_batch_s or 0:.2f} s (tf.data start: shuffle buffer fill), the first call "
          "of each compiled branch " + ", ".join(f"{name.replace('_', ' ')} {v:.2f} s"
                                               for name, v in sorted(rec.first_calls_s.items())))
    print("| window | steps | wall s | benchmark s | extra s | next() s | step calls s | "
          "hooks s | wait at sync s | rest of loop s | CPU s | benchmark CPU s | flush s (untimed) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, w in enumerate(rec.windows, 1):
        bench, bench_cpu = bench_s_per_step * w["steps"], bench_cpu_per_step * w["steps"]
        rest = w["wall_s"] - w["next_s"] - w["dispatch_s"] - w["report_s"] - w["sync_wait_s"]
        row = dict(w, window=i, rest_s=rest, benchmark_s=bench, benchmark_cpu_s=bench_cpu,
                   extra_s=w["wall_s"] - bench)
        rows.append(row)
        print(f"| {i} | {w['steps']} | {w['wall_s']:.2f} | {bench:.2f} | {row['extra_s']:.2f} | "
              f"{w['next_s']:.2f} | {w['dispatch_s']:.2f} | {w['report_s']:.3f} | "
              f"{w['sync_wait_s']:.2f} | {rest:.3f} | {w['cpu_s']:.1f} | {bench_cpu:.1f} | "
              f"{w.get('flush_s', 0):.3f} |")
    threads = collections.Counter()
    for w in rec.windows:
        threads.update(w["threads"])
    top = ", ".join(f"{name} {v:.1f}" for name, v in threads.most_common(6))
    wall = sum(w["wall_s"] for w in rec.windows)
    steps = sum(w["steps"] for w in rec.windows)
    start = rec.pipeline_build_s + (rec.first_batch_s or 0.0)
    print(f"CPU seconds by thread over the timed windows (tf_XLAEigen: XLA's compute; the others "
          f"named python: tf.data, wandb, orbax): {top}")
    print(f"timed: {wall:.2f} s for {steps} steps ({steps * batch / wall:.1f} images/s) against the "
          f"benchmark's {bench_s_per_step * steps:.2f} s; the pipeline start ({start:.2f} s) is "
          "outside both. Step calls return once XLA:CPU has at most a step or two in flight, so "
          "their time is mostly the device's, not dispatch.")
    return dict(windows=rows, threads_cpu_s=dict(threads), timed_s=wall, steps=steps,
                pipeline_start_s=start,
                first_calls_s=rec.first_calls_s)


def ratio_to_none(base: dict | None, r: dict, kind: str) -> float | None:
    """Step-time ratio to `none` within each round (both under the same load), median over
    rounds: slow drift of a shared machine cancels out."""
    if not base:
        return None
    return statistics.median(b / m for b, m in zip(base[kind], r[kind], strict=True))


# --- the measurement -----------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if args.steps < 1 or args.rounds < 0:
        sys.exit("--steps must be >= 1 and --rounds >= 0")
    if args.data == "real" and not args.data_dir and not os.environ.get("TFDS_DATA_DIR"):
        print("note: --data real without --data-dir reads ~/tensorflow_datasets", file=sys.stderr)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    if args.verbose:
        logging.getLogger("looksam").setLevel(logging.INFO)

    from looksam import config, host_devices

    overrides = {label: run_overrides(args, label) for label in args.methods}
    # The device count, before JAX starts: the trainer's own rule on its own config (run() asks
    # again and finds XLA_FLAGS set), or --host-devices.
    if args.host_devices:
        os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                                   f"{host_devices.FLAG}={args.host_devices}").strip()
        why = "--host-devices"
    else:
        why = host_devices.configure(config.scaled_config(compose(overrides[args.methods[0]])).trainer) \
            or "host_devices.configure, as the trainer"
    import jax

    from looksam import train

    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    devices = jax.devices()
    print(f"jax {jax.__version__} on {len(devices)} x {devices[0].device_kind} ({why}); model="
          f"{args.model} scale={args.scale}, {args.data} data, {args.steps} steps x {args.rounds} "
          f"round(s); overrides of every run: {' '.join(base_overrides(args) + args.override)}",
          flush=True)

    benches = {}
    for label in args.methods:
        benches[label] = Bench(compose(overrides[label]), args.bench_warmup)
        print(f"  benchmark {label:<10} compiled in {benches[label].compile_s:5.1f} s "
              f"({' '.join(method_overrides(label))})", flush=True)
    batch = benches[args.methods[0]].batch_size

    times = {label: dict(trainer=[], bench=[], bench_cpu=[], compile=[], total=[])
             for label in args.methods}
    t_all = time.perf_counter()
    for i in range(args.rounds):
        order = args.methods[i % len(args.methods):] + args.methods[:i % len(args.methods)]
        for label in order:
            summary = run_trainer(compose(overrides[label]), args.keep_workdirs)
            if summary["step"] != args.steps:
                sys.exit(f"{label}: the trainer ran {summary['step']} steps, not {args.steps}")
            if summary["hardware"]["device_count"] != len(devices):
                sys.exit(f"{label}: the trainer ran on {summary['hardware']['device_count']} "
                         f"devices, the benchmark on {len(devices)}")
            wall, cpu = benches[label].block(args.steps)
            rec = times[label]
            rec["trainer"].append(summary["images_per_sec"])
            rec["bench"].append(args.steps * batch / wall)
            rec["bench_cpu"].append(cpu / args.steps)
            rec["compile"].append(summary["compile_seconds"])
            rec["total"].append(summary["total_seconds"])
            print(f"  round {i + 1}/{args.rounds} {label:<10} trainer {summary['images_per_sec']:7.1f} "
                  f"images/s, benchmark {args.steps * batch / wall:7.1f} images/s "
                  f"(trainer run {summary['total_seconds']:.1f} s, compiling "
                  f"{summary['compile_seconds']:.1f} s)", flush=True)
    elapsed = time.perf_counter() - t_all

    rows = []
    base = times.get("none")
    if args.rounds:
        for label in args.methods:
            r = times[label]
            trainer_ips, bench_ips = statistics.median(r["trainer"]), statistics.median(r["bench"])
            ideal = benches[label].est.ideal_cost
            trainer_ratio = ratio_to_none(base, r, "trainer")
            rows.append(dict(
                method=label, trainer_images_per_sec=trainer_ips, bench_images_per_sec=bench_ips,
                trainer_over_bench=trainer_ips / bench_ips,
                trainer_over_bench_per_round=[t / b for t, b in zip(r["trainer"], r["bench"], strict=True)],
                trainer_ratio=trainer_ratio, bench_ratio=ratio_to_none(base, r, "bench"), ideal=ideal,
                images_within_10pct=trainer_ips >= (1 - IMAGES_TOLERANCE) * bench_ips,
                ratio_within_5pct=None if trainer_ratio is None else
                abs(trainer_ratio / ideal - 1) <= RATIO_TOLERANCE,
                ratio_at_most_5pct_above=None if trainer_ratio is None else
                trainer_ratio <= (1 + RATIO_TOLERANCE) * ideal,
                trainer_images_per_sec_per_round=r["trainer"], bench_images_per_sec_per_round=r["bench"],
                bench_cpu_s_per_step=statistics.median(r["bench_cpu"]),
                trainer_compile_s=statistics.median(r["compile"]),
                trainer_total_s=statistics.median(r["total"]),
                bench_compile_s=benches[label].compile_s,
                overrides=[o.replace(args.data_dir, "<data-dir>") if args.data_dir else o
                           for o in overrides[label]]))  # no machine path in the rows

        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        yes = lambda v: "-" if v is None else ("yes" if v else "NO")  # noqa: E731
        print(f"\nmodel={args.model} scale={args.scale}, batch {batch}, {args.data} data, "
              f"{len(devices)} device(s); median of {args.rounds} round(s) x {args.steps} steps "
              f"({elapsed / 60:.1f} min)")
        print("| method | trainer images/s | benchmark images/s | trainer / benchmark | "
              "trainer ratio to none | benchmark ratio to none | ideal | within 10% | "
              "at most 5% above ideal | within 5% of ideal |")
        print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
        for row in rows:
            print(f"| {row['method']} | {row['trainer_images_per_sec']:.1f} | "
                  f"{row['bench_images_per_sec']:.1f} | {row['trainer_over_bench']:.3f} | "
                  f"{fmt(row['trainer_ratio'], '.3f')} | {fmt(row['bench_ratio'], '.3f')} | "
                  f"{row['ideal']:.3f} | {yes(row['images_within_10pct'])} | "
                  f"{yes(row['ratio_at_most_5pct_above'])} | {yes(row['ratio_within_5pct'])} |")

    breakdowns = {}
    if args.breakdown:
        for label in args.methods:
            b = benches[label]
            wall, cpu = b.block(args.steps)  # the benchmark's step, just before the run
            rec = Breakdown()
            summary = run_trainer(compose(overrides[label]), args.keep_workdirs, hooks=[rec])
            breakdowns[label] = dict(
                trainer_images_per_sec=summary["images_per_sec"],
                bench_images_per_sec=args.steps * batch / wall,
                pipeline_build_s=rec.pipeline_build_s, first_batch_s=rec.first_batch_s,
                trainer_total_s=summary["total_seconds"], trainer_compile_s=summary["compile_seconds"],
                **print_breakdown(label, rec, summary, batch, wall / args.steps, cpu / args.steps))

    if args.json:
        with open(args.json, "w") as f:
            recorded = vars(args) | {"json": os.path.basename(args.json),
                                     "data_dir": args.data_dir and os.path.basename(args.data_dir),
                                     "compilation_cache": args.compilation_cache
                                     and os.path.basename(args.compilation_cache)}
            json.dump(dict(args=recorded, jax=jax.__version__, devices=len(devices),
                           device_kind=devices[0].device_kind, batch=batch, seconds=elapsed,
                           hardware=train.environment(devices), rows=rows, breakdown=breakdowns),
                      f, indent=1, default=str)


if __name__ == "__main__":
    main()
