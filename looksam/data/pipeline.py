"""TFDS + tf.data input pipelines: host-local numpy batches for training and evaluation.

Training: per-process shard of the split -> per-epoch shuffle seeded by (run seed, epoch) ->
per-example augmentation with stateless seeds (run seed, epoch, index) -> batch -> mixup ->
prefetch. Every random choice is a function of the run seed and the example's position in the
stream, so a run resumed at step s sees exactly the batches an uninterrupted run sees from step s
(`start_step`), at the cost of reading at most one epoch of records to get there.

Evaluation: every example of the split exactly once, in a fixed order, padded to whole batches
with `mask = False` examples so that every process runs the same number of batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# tf.data is only a host-side input library here: keep TensorFlow off any accelerator.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    tfds_name: str
    train_split: str
    eval_split: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_ops: tuple  # ((op name, kwargs), ...) per example before normalisation
    eval_ops: tuple
    train_examples: int  # the paper's epoch, for schedules scaled to another dataset
    manual: bool = False  # TFDS needs archives downloaded by hand (ImageNet)
    download_host: str | None = None  # where TFDS downloads it from (probed before a download)


DATASETS = {
    "cifar10": DatasetSpec("cifar10", "train", "test", 10, 32, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), (("cifar_crop_flip", {}),), (), 50_000,
                           download_host="www.cs.toronto.edu"),
    "cifar100": DatasetSpec("cifar100", "train", "test", 100, 32, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), (("cifar_crop_flip", {}),), (), 50_000,
                            download_host="www.cs.toronto.edu"),
    "imagenet2012": DatasetSpec("imagenet2012", "train", "validation", 1000, 224,
                                (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                (("inception_crop", dict(size=224)),),
                                (("center_crop", dict(size=224)),), 1_281_167, manual=True),
}


class DatasetNotPrepared(FileNotFoundError):
    """The dataset is not in the TFDS data directory; the message says how to prepare it."""


def data_dir(configured: str | None = None) -> str:
    """The config's data_dir, else $TFDS_DATA_DIR, else TFDS's default (~/tensorflow_datasets)."""
    return os.path.expanduser(configured or os.environ.get("TFDS_DATA_DIR")
                              or "~/tensorflow_datasets")


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


PROBE_SECONDS = 3.0
# Set (to anything) on a machine that must never download, e.g. air-gapped clusters and the tests.
OFFLINE_VARIABLE = "LOOKSAM_OFFLINE"


def reachable(host: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether host:443 accepts a connection within timeout seconds ($LOOKSAM_OFFLINE: never)."""
    import socket

    if os.environ.get(OFFLINE_VARIABLE):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def builder(name: str, directory: str | None = None, download: bool = False):
    """The TFDS builder, checked to hold data, prepared first when it is missing, TFDS can
    download it, `download` is on and its host answers: otherwise it fails in seconds, with the
    command that fixes it. The probe matters: TFDS on a machine without internet retries a
    download for minutes before failing.
    """
    import tensorflow_datasets as tfds

    ds_spec, directory = spec(name), data_dir(directory)
    b = tfds.builder(ds_spec.tfds_name, data_dir=directory)
    if _has_data(b, ds_spec):
        return b
    missing = (f"{name} is not prepared in {directory} (set data.data_dir or TFDS_DATA_DIR if it "
               "lives elsewhere)")
    if download and not ds_spec.manual:
        if not reachable(ds_spec.download_host):
            why = f"${OFFLINE_VARIABLE} is set" if os.environ.get(OFFLINE_VARIABLE) else "offline?"
            raise DatasetNotPrepared(
                f"{missing}, and {ds_spec.download_host} did not answer within {PROBE_SECONDS:g} s "
                f"({why}). " + prepare_instructions(name, directory))
        import logging

        logging.getLogger(__name__).warning("%s; downloading and preparing it now (once)", missing)
        b.download_and_prepare()
        return b
    raise DatasetNotPrepared(f"{missing}. " + prepare_instructions(name, directory))


def _has_data(b, ds_spec) -> bool:
    if b.is_prepared():
        return True
    try:  # tfds.testing.mock_data serves examples without any prepared files
        b.as_dataset(split=ds_spec.eval_split)
        return True
    except (AssertionError, FileNotFoundError, ValueError, KeyError):
        return False


def prepare_instructions(name: str, directory: str) -> str:
    if spec(name).manual:
        return ("ImageNet needs a manual download: register at https://image-net.org/download-images, "
                f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {directory}/downloads/manual/, "
                f"then run\n  python -m looksam.data prepare {name} --data-dir {directory}")
    return (f"Prepare it (needs internet) with\n  python -m looksam.data prepare {name} "
            f"--data-dir {directory}\nor copy a prepared TFDS directory there.")


def num_examples(b, split) -> int:
    """Examples in a (sub)split; counted by reading where TFDS has no metadata (mock data)."""
    try:
        return int(b.info.splits[split].num_examples)
    except (KeyError, ValueError):
        return int(b.as_dataset(split=split).reduce(0, lambda n, _: n + 1).numpy())


def shared_examples(b, split_a: str, split_b: str) -> int:
    """How many examples two TFDS split strings of one builder have in common (0: disjoint)."""
    import tensorflow_datasets as tfds

    def ranges(split):
        out = []
        for part in tfds.core.ReadInstruction.from_spec(split).to_absolute(b.info.splits):
            size = b.info.splits[part.splitname].num_examples
            out.append((part.splitname, part.from_ or 0, size if part.to is None else part.to))
        return out

    return sum(max(0, min(e1, e2) - max(s1, s2))
               for n1, s1, e1 in ranges(split_a) for n2, s2, e2 in ranges(split_b) if n1 == n2)


def _process(process_index, process_count):
    if process_index is None or process_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    return process_index, process_count


def _transform(ops, ds_spec, after_normalize=()):
    """Per-example ops by name (augment.OPS), then normalisation with the dataset's
    statistics, then `after_normalize` (Cutout): fn(image uint8, seed [2]) -> float32."""
    from looksam.data import augment  # TensorFlow, which the mock path must not need

    return augment.make_transform(
        list(ops) + [("normalize", dict(mean=ds_spec.mean, std=ds_spec.std))] + list(after_normalize))


def _records(name, split, count, index, directory, download, synthetic, drop_remainder):
    """(this process's examples {image uint8, label}, every process's example count)."""
    import tensorflow_datasets as tfds

    if synthetic:
        base, extra = divmod(synthetic, count)
        sizes = [base + (0 if drop_remainder or i >= extra else 1) for i in range(count)]
        return (synthetic_examples(spec(name), synthetic, split).skip(sum(sizes[:index]))
                .take(sizes[index]), sizes)
    b = builder(name, directory, download)
    parts = tfds.even_splits(split, n=count, drop_remainder=drop_remainder)
    # TFDS writes examples in a shuffled order, so a fixed file order plus a per-epoch buffer
    # shuffle (the whole split for CIFAR) mixes well and stays cheap to reproduce.
    records = b.as_dataset(split=parts[index], shuffle_files=False,
                           read_config=tfds.ReadConfig(add_tfds_id=False))
    sizes = [num_examples(b, p) for p in parts]
    return records.map(lambda ex: {"image": ex["image"], "label": ex["label"]}), sizes


def synthetic_examples(ds_spec: DatasetSpec, n: int, split: str):
    """n deterministic random images of the dataset's size (ImageNet: 256x320, to be cropped) and
    labels; no files, no TFDS. For smoke runs, where only shapes and plumbing matter."""
    import zlib

    import tensorflow as tf

    salt = zlib.crc32(split.encode())
    shape = [256, 320, 3] if ds_spec.manual else [ds_spec.image_size, ds_spec.image_size, 3]

    def example(i):
        seed = tf.stack([i, tf.constant(salt, tf.int64)])
        image = tf.random.stateless_uniform(shape, seed, 0, 256, dtype=tf.int32)
        label = tf.random.stateless_uniform([], seed + 1, 0, ds_spec.num_classes, dtype=tf.int32)
        return {"image": tf.cast(image, tf.uint8), "label": label}

    return tf.data.Dataset.range(n).map(example)


def train_dataset(name: str, *, global_batch: int, seed: int, directory: str | None = None,
                  split: str | None = None, ops: Sequence | None = None,
                  randaugment: tuple[int, int] | None = None,
                  cutout: tuple[int, float] | None = None, mixup_alpha: float = 0.0,
                  label_smoothing: float = 0.0, shuffle_buffer: int = 50_000, start_step: int = 0,
                  process_index: int | None = None, process_count: int | None = None,
                  shards: int | None = None, download: bool = False, synthetic: int | None = None):
    """The endless training stream of this process's batches (global_batch / process_count each).

    The split is read as `shards` parts (default: one per process), each batched to
    global_batch / shards examples; a process concatenates the batches of its own parts. With
    the same `shards`, one process and several see the same global batches.

    Labels are int32 [b], or float32 [b, classes] once mixup or label smoothing is on.
    `synthetic=n` serves n generated examples instead of the dataset (smoke runs).
    `cutout=(size, probability)` erases one square per image after normalisation (training only).
    """
    import tensorflow as tf

    ds_spec = spec(name)
    index, count = _process(process_index, process_count)
    shards = shards or count
    if shards % count:
        raise ValueError(f"data.input_shards={shards} must be a multiple of the {count} processes")
    if global_batch % shards:
        raise ValueError(f"global batch {global_batch} must divide over {shards} input shards "
                         f"(one per process unless data.input_shards says otherwise)")
    shard_batch = global_batch // shards
    split = split or ds_spec.train_split
    ops = tuple(ds_spec.train_ops if ops is None else ops)
    if randaugment is not None:  # after the crop, on uint8 pixels (augment's docstring)
        num_ops, magnitude = randaugment
        ops = ops + (("randaugment", dict(num_ops=num_ops, magnitude=magnitude)),)
    after = () if cutout is None else (("cutout", dict(size=cutout[0], probability=cutout[1])),)
    transform = _transform(ops, ds_spec, after)
    run_seed = tf.constant(seed, tf.int64)

    def shard_stream(shard):
        records, sizes = _records(name, split, shards, shard, directory, download, synthetic,
                                  drop_remainder=True)
        epoch_size = sizes[shard]
        if epoch_size < shard_batch:
            raise ValueError(f"{name} {split}: {epoch_size} examples per input shard, fewer than "
                             f"one batch of {shard_batch}")
        start_epoch, offset = divmod(start_step * shard_batch, epoch_size)

        def epoch(e):
            shuffled = records.shuffle(min(shuffle_buffer, epoch_size), seed=run_seed * 1_000_003 + e,
                                       reshuffle_each_iteration=False)
            # Augmentation seeds differ between shards: (epoch, position * shards + shard).
            return shuffled.enumerate().map(
                lambda i, ex: {**ex, "seed": tf.stack([run_seed * 7919 + e, i * shards + shard])})

        ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).skip(offset)

        def preprocess(ex):
            image = transform(ex["image"], ex["seed"])
            label = tf.cast(ex["label"], tf.int32)
            return {"image": tf.ensure_shape(image, [None, None, 3]), "label": label}

        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(shard_batch, drop_remainder=True)
        if mixup_alpha > 0 or label_smoothing > 0:
            mix_seed = run_seed + 104729 + 15485863 * shard

            from looksam.data import augment

            def soften(step, batch):
                labels = tf.one_hot(batch["label"], ds_spec.num_classes, dtype=tf.float32)
                if label_smoothing > 0:
                    labels = augment.label_smoothing(labels, label_smoothing)
                images = batch["image"]
                if mixup_alpha > 0:
                    images, labels = augment.mixup(images, labels, tf.stack([mix_seed, step]),
                                                   alpha=mixup_alpha)
                return {"image": images, "label": labels}

            ds = ds.enumerate(start=start_step).map(soften, num_parallel_calls=tf.data.AUTOTUNE)
        return ds

    per_process = shards // count
    streams = [shard_stream(index * per_process + j) for j in range(per_process)]
    ds = streams[0] if per_process == 1 else tf.data.Dataset.zip(tuple(streams)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]})
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(name: str, *, global_batch: int, directory: str | None = None,
                 split: str | None = None, ops: Sequence | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 download: bool = False, synthetic: int | None = None):
    """Every example of the split once, fixed order, padded with mask=False to whole batches.

    Each process reads its own contiguous part; all processes run the same number of batches.
    """
    import tensorflow as tf
    from clu import deterministic_data

    ds_spec = spec(name)
    index, count = _process(process_index, process_count)
    if global_batch % count:
        raise ValueError(f"global batch {global_batch} must divide over {count} processes")
    local_batch = global_batch // count
    split = split or ds_spec.eval_split
    records, sizes = _records(name, split, count, index, directory, download, synthetic,
                              drop_remainder=False)
    num_batches = max(math.ceil(max(sizes) / local_batch), 1)
    transform = _transform(ds_spec.eval_ops if ops is None else ops, ds_spec)
    seed = tf.zeros([2], tf.int64)  # eval ops are deterministic

    def preprocess(ex):
        return {"image": transform(ex["image"], seed), "label": tf.cast(ex["label"], tf.int32)}

    ds = records.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # mask=True on every example, then zeros with mask=False up to num_batches whole batches.
    ds = deterministic_data.pad_dataset(ds, batch_dims=[local_batch], pad_up_to_batches=num_batches,
                                        cardinality=sizes[index])
    return ds.batch(local_batch).prefetch(tf.data.AUTOTUNE)


def as_numpy(ds) -> Iterator[dict[str, np.ndarray]]:
    import tensorflow_datasets as tfds

    return iter(tfds.as_numpy(ds))


def prefetch_to_devices(batches: Iterator[dict[str, Any]], sharding, size: int = 2):
    """Host-local numpy batches -> global jax.Arrays on `sharding`, `size` batches ahead."""
    import collections

    import jax

    queue = collections.deque()

    def put(batch):
        queue.append(jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, x), batch))

    for batch in batches:
        put(batch)
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def steps_per_epoch(name: str, global_batch: int, directory: str | None = None,
                    split: str | None = None, download: bool = False,
                    synthetic: int | None = None) -> int:
    """Optimizer steps per epoch in the paper's sense (whole global batches over the split)."""
    if synthetic:
        return synthetic // global_batch
    b = builder(name, directory, download)
    return num_examples(b, split or spec(name).train_split) // global_batch
