#!/usr/bin/env python
"""Step time of every sharpness-aware method, side by side in one process.

Each method's train step is the trainer's own (`train.make_train_step`: estimator gradient,
SGD-momentum update, BatchNorm statistics from the clean pass, the finite check), built from
`train.initial_state` and compiled once per branch by `train.compile_steps`, for any model of
`looksam.models` (`--model`, `--model-kwargs`); then the methods are timed in interleaved blocks of
`--steps` steps (compile excluded, `block_until_ready` at the end of each block), rotating the
order every round; the table shows the median over rounds of the step time and of each round's
ratio to `none`. The batch is sharded over every local device (`--host-devices N` simulates N CPU
devices).

    python scripts/bench_methods.py                       # CNN widths 32-64-128, batch 128, 32x32
    python scripts/bench_methods.py --methods none sam looksam-5 --rounds 3
    python scripts/bench_methods.py --methods none sam --microbatch 32   # 4 x 32 against 1 x 128
    python scripts/bench_methods.py --model resnet18 --model-kwargs '{"width": 16}'  # scale=cpu's

`--microbatch N` also times every method with the batch accumulated in chunks of N examples
(`trainer.microbatch`, the large-batch path) and prints each one's step time over the
whole-batch step of the same method.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

# label -> (method, hyper-parameters, in-graph mode or None for host dispatch of SAM steps)
METHODS = {
    "none": ("none", {}, None),
    "sam": ("sam", {}, None),
    "sam_k-5": ("sam_k", dict(k=5), None),
    "looksam-5": ("looksam", dict(k=5, alpha=0.7), None),
    "looksam-5-in-graph": ("looksam", dict(k=5, alpha=0.7), "auto"),
    "looksam-5-cond": ("looksam", dict(k=5, alpha=0.7), "cond"),
    "looksam-5-select": ("looksam", dict(k=5, alpha=0.7), "select"),
    "layersam": ("layersam", {}, None),
    "look_layersam-5": ("look_layersam", dict(k=5, alpha=0.7), None),
    "esam": ("esam", dict(beta=0.6, gamma=0.5), None),
    "esam-swp": ("esam", dict(beta=0.6, gamma=1.0), None),
    "esam-sds": ("esam", dict(beta=1.0, gamma=0.5), None),
    # ESAM's code reading (--reading code): m = 64 groups, the official selection; vmapped or
    # looped groups (the estimator's group_map; "auto" loops on CPU).
    "esam-code-vmap": ("esam", dict(beta=0.6, gamma=0.5, m=64, selection="official", group_map="vmap"), None),
    "esam-code-loop": ("esam", dict(beta=0.6, gamma=0.5, m=64, selection="official", group_map="loop"), None),
    # sam.swp_skip: the dropped kernels' weight gradients skipped in a lax.cond per layer.
    "esam-skip": ("esam", dict(beta=0.6, gamma=0.5, swp_skip=True), None),
    "esam-swp-skip": ("esam", dict(beta=0.6, gamma=1.0, swp_skip=True), None),
    "sam-m64-vmap": ("sam", dict(m=64, group_map="vmap"), None),
    "sam-m64-loop": ("sam", dict(m=64, group_map="loop"), None),
}
DEFAULT = ["none", "sam", "sam_k-5", "looksam-5", "look_layersam-5", "esam", "looksam-5-in-graph"]
# Acceptance targets on a compute-bound CPU step (issue 2): ratio of step time to `none`.
TARGETS = {"sam": 2.05, "sam_k-5": 1.25, "looksam-5": 1.25, "look_layersam-5": 1.27}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=DEFAULT, choices=sorted(METHODS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--model", default="cnn", help="a looksam.models name (default: cnn)")
    p.add_argument("--model-kwargs", type=json.loads, default=None,
                   help='JSON keyword arguments of the model, e.g. \'{"width": 16}\'')
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128],
                   help="the cnn's widths, when --model-kwargs does not give them")
    p.add_argument("--steps", type=int, default=10, help="steps per timed block (a multiple of k)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rho", type=float, default=None, help="default: looksam.sam.DEFAULTS")
    p.add_argument("--host-devices", type=int, default=None,
                   help="simulate N CPU devices (sets XLA_FLAGS before JAX starts)")
    p.add_argument("--microbatch", type=int, default=None,
                   help="also time each method accumulating the batch in chunks of this many examples")
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.host_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.host_devices}")
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from looksam import models, optim, sam, train

    devices = jax.devices()
    if args.batch % len(devices):
        sys.exit(f"--batch {args.batch} must divide over {len(devices)} devices")
    if args.microbatch and (args.batch % args.microbatch or args.microbatch % len(devices)):
        sys.exit(f"--microbatch {args.microbatch} must divide --batch {args.batch} and be a "
                 f"multiple of the {len(devices)} devices")
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    kwargs = args.model_kwargs if args.model_kwargs is not None else (
        dict(widths=tuple(args.widths)) if args.model == "cnn" else {})
    model = models.create(args.model, num_classes=10, **kwargs)
    rng = np.random.default_rng(0)
    batch = jax.device_put({
        "image": rng.standard_normal((args.batch, args.image_size, args.image_size, 3), np.float32),
        "label": rng.integers(0, 10, (args.batch,), np.int32)}, sharded)
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharded),
                                  batch)
    lr = 0.01
    tx = optim.optimizer("sgd", lr, momentum=0.9, weight_decay=5e-4)
    root = jax.random.key(0)

    def make_runner(label, microbatch=None):
        method, hp, in_graph = METHODS[label]
        if method != "none" and args.rho is not None:
            hp = dict(hp, rho=args.rho)
        est = sam.make(method, **hp, batch_sharding=sharded, microbatch=microbatch,
                       **({} if in_graph is None else dict(in_graph=in_graph)))
        # Every runner owns its state: each step donates it.
        state = jax.device_put(train.initial_state(model, tx, est, args.image_size, root), replicated)
        train_step = train.make_train_step(model, tx, est, lambda step: lr, root)
        t0 = time.perf_counter()
        if in_graph is None:  # the trainer's host dispatch: one program per branch
            compiled = train.compile_steps(train_step, est, state, abstract_batch)
        else:
            compiled = {None: jax.jit(functools.partial(train_step, sam_step=None),
                                      donate_argnums=0).lower(state, abstract_batch).compile()}
        compile_s = time.perf_counter() - t0
        flops = {}
        for branch, fn in compiled.items():
            cost = fn.cost_analysis()
            flops[branch] = (cost[0] if isinstance(cost, list) else cost)["flops"]
        schedule = [None if in_graph else est.is_sam_step(t) for t in range(est.period)]
        mean_flops = sum(flops[b] for b in schedule) / len(schedule)
        return dict(est=est, state=state, compiled=compiled, t=0, flops=mean_flops,
                    compile_s=compile_s, times=[], n_params=sum(
                        x.size for x in jax.tree.leaves(state.params)))

    def run_block(r, steps):
        state = r["state"]
        for _ in range(steps):
            t = r["t"]
            branch = None if None in r["compiled"] else r["est"].is_sam_step(t)
            state, metrics = r["compiled"][branch](state, batch)
            r["t"] = t + 1
        jax.block_until_ready(state)
        r["state"] = state
        return metrics["loss"]

    runners, chunked = {}, {}
    for label in args.methods:
        runners[label] = make_runner(label)
        if len(runners) == 1:
            print(f"jax {jax.__version__} on {len(devices)} x {devices[0].device_kind}; model "
                  f"{args.model} {kwargs} ({runners[label]['n_params'] / 1e6:.2f}M params), batch "
                  f"{args.batch} at {args.image_size}x{args.image_size}, SGD-momentum, rho "
                  f"{sam.DEFAULTS['rho'] if args.rho is None else args.rho}; the trainer's "
                  "train step", flush=True)
        print(f"  compiled {label:<20} {runners[label]['compile_s']:6.1f} s", flush=True)
        if args.microbatch:
            name = f"{label} {args.batch // args.microbatch}x{args.microbatch}"
            runners[name] = make_runner(label, args.microbatch)
            chunked[name] = label
            print(f"  compiled {name:<20} {runners[name]['compile_s']:6.1f} s", flush=True)
    for r in runners.values():  # one untimed block each: first-run allocations, caches
        run_block(r, args.steps)
    labels = list(runners)
    for i in range(args.rounds):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            t0 = time.perf_counter()
            loss = run_block(runners[label], args.steps)
            runners[label]["times"].append((time.perf_counter() - t0) / args.steps)
            if not np.isfinite(float(loss)):
                sys.exit(f"{label}: non-finite loss {float(loss)}")
        print(f"  round {i + 1}/{args.rounds} done", flush=True)

    base = runners.get("none")
    rows = []
    for label, r in runners.items():
        sec = statistics.median(r["times"])
        # Ratios are taken within each round, where both blocks ran back to back under the same
        # machine load, then the median over rounds: slow drift of a shared CPU cancels out.
        ratio = statistics.median(t / b for t, b in zip(r["times"], base["times"], strict=True)) \
            if base else None
        rows.append(dict(
            method=label, ms_per_step=1e3 * sec, images_per_sec=args.batch / sec, ratio=ratio,
            spread=(max(r["times"]) - min(r["times"])) / sec,
            flop_ratio=r["flops"] / base["flops"] if base else None,
            ideal=r["est"].ideal_cost, target=TARGETS.get(label)))
    if base and "sam" in runners and "esam" in runners:
        next(row for row in rows if row["method"] == "esam")["target"] = next(
            row["ratio"] for row in rows if row["method"] == "sam")

    print()
    print("| method | ms/step | images/s | ratio to none | FLOP ratio | ideal (spec) | target | met |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        met = "" if row["target"] is None or row["ratio"] is None else (
            "yes" if row["ratio"] <= row["target"] else "NO")
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(f"| {row['method']} | {row['ms_per_step']:.1f} | {row['images_per_sec']:.0f} | "
              f"{fmt(row['ratio'], '.3f')} | {fmt(row['flop_ratio'], '.3f')} | "
              f"{row['ideal']:.3f} | {fmt(row['target'], '.3f')} | {met} |")
    if chunked:
        by_label = {row["method"]: row for row in rows}
        print("\n| method | microbatched ms/step | whole batch ms/step | overhead |")
        print("|---|---:|---:|---:|")
        for name, label in chunked.items():
            mb, whole = by_label[name]["ms_per_step"], by_label[label]["ms_per_step"]
            by_label[name]["overhead_vs_whole_batch"] = mb / whole
            print(f"| {name} | {mb:.1f} | {whole:.1f} | {mb / whole:.3f}x |")
    print(f"\nmedian of {args.rounds} rounds x {args.steps} steps; max spread between rounds "
          f"{max(r['spread'] for r in rows):.1%}")
    if args.json:
        with open(args.json, "w") as f:
            recorded = vars(args) | {"json": os.path.basename(args.json)}  # no machine path
            json.dump(dict(args=recorded, jax=jax.__version__, devices=len(devices),
                           device_kind=devices[0].device_kind, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
