#!/usr/bin/env python
"""Where a training step's time goes, ours against the PyTorch reference, by kind of operation.

Both steps are the ones `scripts/bench_torch.py` times (the trainer's compiled step on the default
host devices; the reference of docs/sharpness-aware.md in PyTorch on as many threads). Ours is
traced with `jax.profiler` (XLA:CPU's per-op TraceMe events, `--xla_cpu_enable_xprof_traceme`) and
each executed HLO instruction is put in a category from the JAX op that produced it (its
`op_name` metadata: a convolution under `transpose(...)` is a backward one); PyTorch's step is
traced with `torch.profiler` and each aten op's self time put in the same categories. A
category's ms/step is its share of the summed op time times the measured wall time of a step, so
the two columns add up to each implementation's step.

    pip install -e '.[bench]'
    python scripts/profile_step.py                       # SGD-M, ResNet-18 width 64, batch 128
    python scripts/profile_step.py --method sam --out docs/bench/profile_sam.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CATEGORIES = ("convolution, forward", "convolution, backward", "BatchNorm", "dense layer",
              "layout copies", "elementwise, reductions, optimizer")


def hlo_category(op_name: str, instruction: str) -> str:
    if "conv_general_dilated" in op_name:
        return "convolution, backward" if "transpose(" in op_name else "convolution, forward"
    if "BatchNorm" in op_name:
        return "BatchNorm"
    if "dot_general" in op_name:
        return "dense layer"
    if "copy" in instruction or "transpose" in instruction:
        return "layout copies"
    return "elementwise, reductions, optimizer"


def torch_category(op: str) -> str | None:
    if "convolution_backward" in op:
        return "convolution, backward"
    if "conv" in op:
        return "convolution, forward"
    if "batch_norm" in op:
        return "BatchNorm"
    if op in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul"):
        return "dense layer"
    if op in ("aten::copy_", "aten::contiguous", "aten::clone", "aten::transpose", "aten::t"):
        return "layout copies"
    if op.startswith("aten::"):
        return "elementwise, reductions, optimizer"
    return None  # Python-side ranges (Optimizer.step, autograd wrappers): their ops count inside


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op_name in its metadata (fusions: their own metadata)."""
    names = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if m:
            names.setdefault(m.group(1), m.group(2))
    return names


def profile_ours(method: str, width: int, batch: int, steps: int, images, labels):
    import bench_torch
    import jax

    holder, run = bench_torch.our_step(method, width, batch, lr=0.1, weight_decay=5e-4)
    compiled = holder["steps"][False]
    names = op_names(compiled.as_text())
    for _ in range(2):
        jax.block_until_ready(run(images, labels))
    t0 = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(run(images, labels))
    wall = (time.perf_counter() - t0) / steps
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(steps):
                jax.block_until_ready(run(images, labels))
        trace = json.load(gzip.open(glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            totals[hlo_category(names[e["name"]], e["name"])] += e.get("dur", 0.0)
    return wall, totals, len(jax.devices())


def profile_torch(method: str, width: int, batch: int, steps: int, images, labels):
    import bench_torch
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = bench_torch.torch_resnet18(width)
    step = bench_torch.TorchStep(model, method, lr=0.1)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))
    for _ in range(2):
        step(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    wall = (time.perf_counter() - t0) / steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(x, y)
    totals = collections.Counter()
    for event in prof.key_averages():
        category = torch_category(event.key)
        if category:
            totals[category] += event.self_cpu_time_total
    return wall, totals, torch.get_num_threads()


def shares(wall: float, totals) -> dict[str, float]:
    """ms/step per category: its share of the op time, times the step's wall time."""
    total = sum(totals.values()) or 1.0
    return {c: 1e3 * wall * totals.get(c, 0.0) / total for c in CATEGORIES}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="sgd", choices=("sgd", "sam", "esam"))
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed and profiled steps of each")
    p.add_argument("--out", default=None, help="also write the table as JSON")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("PyTorch is not installed: pip install -e '.[bench]'")
    from looksam import host_devices

    host_devices.configure(argparse.Namespace(batch_size=args.batch, eval_batch_size=args.batch,
                                              microbatch=None, num_devices=None))
    os.environ["XLA_FLAGS"] = (os.environ["XLA_FLAGS"] + " --xla_cpu_enable_xprof_traceme=true").strip()
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 32, 32, 3), np.float32)
    labels = rng.integers(0, 10, (args.batch,), np.int32)
    torch.set_num_threads(host_devices.available_cores())
    ours = profile_ours(args.method, args.width, args.batch, args.steps, images, labels)
    theirs = profile_torch(args.method, args.width, args.batch, args.steps, images, labels)
    rows = {"ours": shares(ours[0], ours[1]), "pytorch": shares(theirs[0], theirs[1])}
    print(f"{args.method} step, ResNet-18 width {args.width}, batch {args.batch}; ours on "
          f"{ours[2]} CPU device(s) ({os.environ['XLA_FLAGS']}), PyTorch {torch.__version__} on "
          f"{theirs[2]} thread(s); {args.steps} profiled steps each\n")
    print("| category | PyTorch ms/step | ours ms/step | ours / PyTorch |")
    print("|---|---:|---:|---:|")
    for c in CATEGORIES + ("step (wall)",):
        a = 1e3 * theirs[0] if c == "step (wall)" else rows["pytorch"][c]
        b = 1e3 * ours[0] if c == "step (wall)" else rows["ours"][c]
        print(f"| {c} | {a:.0f} | {b:.0f} | {b / a:.2f} |" if a else f"| {c} | 0 | {b:.0f} | - |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(method=args.method, width=args.width, batch=args.batch, steps=args.steps,
                           xla_flags=os.environ["XLA_FLAGS"], torch_threads=theirs[2],
                           wall_ms={"ours": 1e3 * ours[0], "pytorch": 1e3 * theirs[0]},
                           ms_per_step=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
