#!/usr/bin/env python
"""Which XLA:CPU flags make the trainer's step faster, and do they keep its results?

XLA_FLAGS must be set before JAX starts, so every candidate runs in its own subprocess (this script
with `--worker`): it builds the trainer's own SGD-momentum step (`train.initial_state`,
`train.make_train_step`, `train.compile_steps`) for the CIFAR ResNet-18 on the default host device
count, runs one untimed step from fixed weights and a fixed batch, writes the parameters after it,
then times `--steps` steps. Rounds rotate the candidates' order; the table gives each one's median
ms/step, the median of its per-round ratio to `default`, and the largest parameter difference after
the first step relative to `default`'s (float32 round-off is about 1e-6).

    python scripts/bench_xla_flags.py                          # every candidate, 3 rounds
    python scripts/bench_xla_flags.py --candidates default eigen-conv --rounds 5 --out docs/bench/x.json

The candidates: YNNPACK is this jaxlib's default library for convolutions (the optimized HLO shows
the forward and both backward convolutions as `__ynn_fusion`); `eigen-conv` keeps YNNPACK for
elementwise ops only, so convolutions fall back to XLA's Eigen kernels. The oneDNN flags are
accepted but, in this jaxlib, turn no op into a oneDNN call (dump the HLO with
`--xla_dump_to=DIR --xla_dump_hlo_as_text` and look for `__onednn`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CANDIDATES = {
    "default": "",
    "eigen-conv": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_ELTWISE",
    "ynn-all": ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"),
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "single-thread-eigen": "--xla_cpu_multi_thread_eigen=false",
    "fast-math": "--xla_cpu_enable_fast_math=true",
    "one-device": "--xla_force_host_platform_device_count=1",
}


def worker(args) -> None:
    from looksam import host_devices

    os.environ["XLA_FLAGS"] = args.flags
    host_devices.configure(argparse.Namespace(batch_size=args.batch, eval_batch_size=args.batch,
                                              microbatch=None, num_devices=None))
    import time

    import jax
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_torch  # the trainer's own SGD-momentum step, as bench_torch and profile_step time it

    holder, run = bench_torch.our_step("sgd", args.width, args.batch, lr=0.1, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 32, 32, 3), np.float32)
    labels = rng.integers(0, 10, (args.batch,), np.int32)
    jax.block_until_ready(run(images, labels))
    leaves = jax.tree.leaves(jax.device_get(holder["state"].params))
    np.save(args.params_out, np.concatenate([np.ravel(x) for x in leaves]))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(run(images, labels))
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(seconds=statistics.median(times), devices=jax.device_count(),
                          xla_flags=os.environ["XLA_FLAGS"])))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per candidate and round")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default=None, help="also write the results as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flags", default="", help=argparse.SUPPRESS)
    p.add_argument("--params-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if "default" not in args.candidates:
        p.error("--candidates must include default: every ratio is taken against it")
    import numpy as np

    names = args.candidates
    times = {n: [] for n in names}
    diffs, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                out = os.path.join(tmp, f"{name}.npy")
                env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", f"--flags={CANDIDATES[name]}",
                     "--params-out", out, "--steps", str(args.steps), "--width", str(args.width),
                     "--batch", str(args.batch)], env=env, capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    sys.exit(f"candidate {name} failed (exit {proc.returncode})")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                times[name].append(result["seconds"])
                info[name] = result
            reference = np.load(os.path.join(tmp, "default.npy"))
            for name in names:
                delta = np.abs(np.load(os.path.join(tmp, f"{name}.npy")) - reference)
                diffs[name] = float(delta.max() / np.abs(reference).max())
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {1e3 * times[n][-1]:.0f} ms" for n in names), flush=True)
    rows = []
    for name in names:
        ratio = statistics.median(t / d for t, d in zip(times[name], times["default"], strict=True))
        rows.append(dict(candidate=name, flags=info[name]["xla_flags"], devices=info[name]["devices"],
                         ms_per_step=1e3 * statistics.median(times[name]), ratio=ratio,
                         max_param_diff=diffs[name], seconds=times[name]))
    print(f"\nResNet-18 width {args.width}, batch {args.batch}, SGD-momentum step; "
          f"{args.rounds} rounds x {args.steps} steps\n")
    print("| candidate | XLA_FLAGS | devices | ms/step | ratio to default | max param diff after 1 step |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['candidate']} | `{row['flags']}` | {row['devices']} | {row['ms_per_step']:.0f} | "
              f"{row['ratio']:.3f} | {row['max_param_diff']:.1e} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(width=args.width, batch=args.batch, rounds=args.rounds, steps=args.steps,
                           rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
