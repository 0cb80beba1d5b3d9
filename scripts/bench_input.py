#!/usr/bin/env python
"""The training input pipeline alone, with the decoded split kept in memory and without.

`looksam.data.pipeline.train_dataset` shuffles each epoch through a buffer of the whole split
(CIFAR: 50,000 examples); without a cache every epoch's buffer refills by decoding the split
again, and the training steps wait for it at each epoch boundary. This script reads `--epochs`
epochs of batches (as the trainer does, preprocessing and augmentation included, no model),
alternating `cache` (pipeline.CACHE_BYTES as shipped) and `no-cache` (CACHE_BYTES = 0) for
`--rounds` rounds in one process, and prints per variant the median over rounds of the seconds
per epoch, the longest wait for one batch at an epoch boundary (the refill), and the batches
themselves checked equal between the variants.

    python scripts/bench_input.py --data-dir ../shared/data/tfds          # CIFAR-10, 2 epochs x 3 rounds
    python scripts/bench_input.py --data-dir DIR --split 'train[:10%]' --epochs 3 --json docs/bench/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def read(name, data_dir, split, batch, epochs, cache_bytes):
    import numpy as np

    from looksam.data import pipeline

    shipped = pipeline.CACHE_BYTES
    pipeline.CACHE_BYTES = cache_bytes
    try:
        ds = pipeline.train_dataset(name, global_batch=batch, seed=0, directory=data_dir, split=split)
        steps_per_epoch = pipeline.num_examples(pipeline.builder(name, data_dir, False), split) // batch
        it = iter(ds.as_numpy_iterator())
        waits, checksum = [], 0.0
        t0 = time.perf_counter()
        for _ in range(epochs * steps_per_epoch):
            t = time.perf_counter()
            b = next(it)
            waits.append(time.perf_counter() - t)
            checksum += float(np.asarray(b["image"], np.float64).sum())
        total = time.perf_counter() - t0
    finally:
        pipeline.CACHE_BYTES = shipped
    boundaries = [waits[k * steps_per_epoch] for k in range(1, epochs)]
    return dict(seconds_per_epoch=total / epochs, boundary_wait=max(boundaries, default=0.0),
                first_wait=waits[0], checksum=checksum, steps_per_epoch=steps_per_epoch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", required=True, help="a TFDS data_dir holding the prepared dataset")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="at least 2: the refill happens between epochs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2: the refill this measures happens between epochs")
    if not os.path.isdir(args.data_dir):
        p.error(f"--data-dir {args.data_dir!r} is not a directory (a TFDS data_dir)")
    from looksam.data import pipeline

    variants = {"cache": pipeline.CACHE_BYTES, "no-cache": 0}
    results = {v: [] for v in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for v in order:
            results[v].append(read(args.dataset, args.data_dir, args.split, args.batch,
                                   args.epochs, variants[v]))
            last = results[v][-1]
            print(f"round {r + 1} {v:9s} {last['seconds_per_epoch']:.2f} s/epoch, "
                  f"boundary wait {last['boundary_wait']:.2f} s", file=sys.stderr)
    same = len({round(x["checksum"], 3) for rs in results.values() for x in rs}) == 1
    rows = []
    for v, rs in results.items():
        rows.append(dict(variant=v, seconds_per_epoch=statistics.median(x["seconds_per_epoch"] for x in rs),
                         boundary_wait=statistics.median(x["boundary_wait"] for x in rs),
                         first_wait=statistics.median(x["first_wait"] for x in rs)))
    base = rows[1]["seconds_per_epoch"]
    print(f"{args.dataset} {args.split}, batch {args.batch}, {rows[0]['variant']} vs {rows[1]['variant']},"
          f" {args.epochs} epochs x {args.rounds} rounds; same batches: {same}")
    print("| variant | s/epoch | / no-cache | longest wait at an epoch boundary (s) | first batch (s) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['seconds_per_epoch']:.2f} | {row['seconds_per_epoch'] / base:.3f} "
              f"| {row['boundary_wait']:.2f} | {row['first_wait']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args={k: v for k, v in vars(args).items() if k not in ("data_dir", "json")},
                           rows=rows, same_batches=same, cpus=len(os.sched_getaffinity(0))), f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
