#!/usr/bin/env python
"""Input-pipeline throughput: images/s per host for each dataset/augmentation combination.

Real data is used where the TFDS directory holds it; otherwise the dataset is served by
`tfds.testing.mock_data`, and for ImageNet by synthetic JPEGs of ImageNet's mean size (469x387),
decoded in the pipeline as TFDS would, so decode + crop + augmentation costs are all measured.

    python scripts/bench_pipeline.py --data-dir ../shared/data/tfds
    python scripts/bench_pipeline.py --batches 20 --only imagenet2012
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# (dataset, label, train_dataset kwargs or None for the evaluation pipeline). Every combination
# the papers' configs train or evaluate with: CIFAR's basic augmentation (ESAM Table 4, LookSAM
# Table 1), ImageNet's inception crop (ESAM Table 5, LookSAM Tables 2 and 4-8), RandAugment and
# RandAugment + Mixup (LookSAM Table 3, reproduce/tables/looksam_table3.yaml), and each dataset's
# evaluation pipeline. CIFAR-10 + RandAugment is in neither paper: RandAugment's cost at 32 px.
COMBOS = [
    ("cifar10", "basic (crop+flip)", {}),
    ("cifar10", "basic + RandAugment(2, 14)", dict(randaugment=(2, 14))),
    ("cifar10", "evaluation", None),
    ("cifar100", "basic (crop+flip)", {}),
    ("cifar100", "evaluation", None),
    ("imagenet2012", "inception crop 224 + flip", {}),
    ("imagenet2012", "inception + RandAugment(2, 15)", dict(randaugment=(2, 15))),
    ("imagenet2012", "inception + RandAugment(2, 15) + Mixup(0.5)",
     dict(randaugment=(2, 15), mixup_alpha=0.5)),
    ("imagenet2012", "evaluation (resize 256, centre crop 224)", None),
]


def synthetic_imagenet(num_examples=2_560, num_distinct=16):
    """A mock `_as_dataset` serving JPEG-encoded 469x387 images, decoded per example."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:387, 0:469]
    jpegs = []
    for _ in range(num_distinct):  # smooth colour fields plus noise: JPEG sizes like photos'
        base = np.stack([np.sin(xx / rng.uniform(20, 80) + c) * np.cos(yy / rng.uniform(20, 80))
                         for c in range(3)], -1)
        image = np.clip(127 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        jpegs.append(tf.io.encode_jpeg(image, quality=90))
    jpegs = tf.stack(jpegs)

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        del self, split, decoders, read_config, shuffle_files, kwargs
        # Small: without split metadata the pipeline counts examples by reading them.
        return tf.data.Dataset.range(num_examples).map(lambda i: {
            "image": tf.io.decode_jpeg(jpegs[i % num_distinct], channels=3),
            "label": i % 1000})

    return as_dataset


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="TFDS data_dir (default: $TFDS_DATA_DIR)")
    p.add_argument("--batches", type=int, default=10, help="timed batches per combination")
    p.add_argument("--cifar-batch", type=int, default=128)
    p.add_argument("--imagenet-batch", type=int, default=128)
    p.add_argument("--only", nargs="+", default=None, help="datasets to run")
    p.add_argument("--mock-examples", type=int, default=5_000,
                   help="examples of TFDS mock data for a CIFAR dataset that is not prepared")
    args = p.parse_args(argv)

    import tensorflow as tf
    import tensorflow_datasets as tfds

    from looksam.data import pipeline

    print(f"tf {tf.__version__}, {os.cpu_count()} CPU cores; {args.batches} timed batches after 2 "
          "warm-up batches", flush=True)
    rows = []
    for name, label, train_kwargs in COMBOS:
        if args.only and name not in args.only:
            continue
        try:
            pipeline.builder(name, args.data_dir)
            source, mock = "real", contextlib.nullcontext()
        except pipeline.DatasetNotPrepared:
            if name == "imagenet2012":
                # Enough for the evaluation pass too, which reads the split once.
                size = (args.batches + 2) * args.imagenet_batch
                source, mock = "synthetic JPEG", tfds.testing.mock_data(
                    as_dataset_fn=synthetic_imagenet(num_examples=size))
            else:
                size = max(args.mock_examples, (args.batches + 2) * args.cifar_batch)
                source, mock = "mock", tfds.testing.mock_data(num_examples=size)
        batch = args.imagenet_batch if name == "imagenet2012" else args.cifar_batch
        with mock:
            common = dict(global_batch=batch, directory=args.data_dir, process_index=0,
                          process_count=1)
            ds = (pipeline.eval_dataset(name, **common) if train_kwargs is None else
                  pipeline.train_dataset(name, seed=0, **common, **train_kwargs))
            it = pipeline.as_numpy(ds)
            for _ in range(2):
                next(it)
            t0 = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            rate = args.batches * batch / (time.perf_counter() - t0)
        rows.append((name, label, source, rate))
        print(f"  {name:<13} {label:<45} {rate:9.0f} images/s ({source})", flush=True)

    print("\n| dataset | pipeline | data | images/s per host |\n|---|---|---|---:|")
    for name, label, source, rate in rows:
        print(f"| {name} | {label} | {source} | {rate:.0f} |")


if __name__ == "__main__":
    main()
