"""Synthetic batches in numpy for `data.mock=true`: the trainer's input without TensorFlow.

Smoke runs and accelerator benchmarks need batches of the dataset's shapes and dtypes, not its
pixels, and the machines they run on may have JAX but no TensorFlow. So this path draws
normalised float32 images and int32 labels straight from numpy: no files, no TFDS, no tf.data,
no per-example augmentation (which only costs host time). Soft labels (label smoothing, mixup)
keep the float32 [b, classes] shape the trainer expects from the TFDS path, mixed as
`augment.mixup` mixes them (the batch rolled by one, lambda folded to max(lambda, 1 - lambda)).

Every process builds the same global batch and keeps its own rows, so the global batches do not
depend on the process count, and step s is the same batch whether or not a run resumed there.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np


def examples(n: int, image_size: int, num_classes: int, split: str):
    """n fixed (images float32 [n, s, s, 3] in N(0, 1), labels int32 [n]) for a split."""
    rng = np.random.default_rng(zlib.crc32(split.encode()))
    images = rng.standard_normal((n, image_size, image_size, 3), dtype=np.float32)
    return images, rng.integers(0, num_classes, n, dtype=np.int32)


def _rows(global_batch: int, process_index: int, process_count: int) -> slice:
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} must divide over {process_count} processes")
    local = global_batch // process_count
    return slice(process_index * local, (process_index + 1) * local)


def train_batches(n: int, *, image_size: int, num_classes: int, global_batch: int, seed: int,
                  start_step: int = 0, mixup_alpha: float = 0.0, label_smoothing: float = 0.0,
                  process_index: int = 0, process_count: int = 1,
                  split: str = "train") -> Iterator[dict[str, np.ndarray]]:
    """The endless stream of this process's rows of each global batch, from step start_step."""
    if n < global_batch:
        raise ValueError(f"data.mock_examples={n} is fewer than one batch of {global_batch}")
    images, labels = examples(n, image_size, num_classes, split)
    rows = _rows(global_batch, process_index, process_count)
    per_epoch = n // global_batch
    step = start_step
    while True:
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng((seed, epoch)).permutation(n)
        take = order[position * global_batch:(position + 1) * global_batch]
        batch = {"image": images[take], "label": labels[take]}
        if mixup_alpha > 0 or label_smoothing > 0:
            batch = _soften(batch, num_classes, (seed, step), mixup_alpha, label_smoothing)
        yield {k: v[rows] for k, v in batch.items()}
        step += 1


def _soften(batch, num_classes, seed, mixup_alpha, label_smoothing):
    images = batch["image"]
    labels = np.eye(num_classes, dtype=np.float32)[batch["label"]]
    labels = (1.0 - label_smoothing) * labels + label_smoothing / num_classes
    if mixup_alpha > 0:
        lam = np.random.default_rng(seed).beta(mixup_alpha, mixup_alpha)
        lam = np.float32(max(lam, 1.0 - lam))
        images = lam * images + (1 - lam) * np.roll(images, 1, axis=0)
        labels = lam * labels + (1 - lam) * np.roll(labels, 1, axis=0)
    return {"image": images, "label": labels}


def eval_batches(n: int, *, image_size: int, num_classes: int, global_batch: int,
                 process_index: int = 0, process_count: int = 1,
                 split: str = "test") -> Iterator[dict[str, np.ndarray]]:
    """Every example once in order, the last batch padded with mask=False; this process's rows.
    (The TFDS path pads with clu's deterministic_data.pad_dataset, which is tf.data: not here.)"""
    images, labels = examples(n, image_size, num_classes, split)
    rows = _rows(global_batch, process_index, process_count)
    for start in range(0, max(n, 1), global_batch):
        stop = min(start + global_batch, n)
        pad = global_batch - (stop - start)
        batch = {
            "image": np.concatenate([images[start:stop], np.zeros((pad, *images.shape[1:]),
                                                                  np.float32)]),
            "label": np.concatenate([labels[start:stop], np.zeros(pad, np.int32)]),
            "mask": np.arange(global_batch) < stop - start,
        }
        yield {k: v[rows] for k, v in batch.items()}
