"""Input pipelines: mock TFDS data for cifar100 / imagenet2012, real CIFAR-10 where present."""

from __future__ import annotations

import hashlib
import pathlib
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from looksam.data import pipeline

SHARED_TFDS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds"
needs_cifar10 = pytest.mark.skipif(
    not (SHARED_TFDS / "cifar10").is_dir(),
    reason=f"real CIFAR-10 (TFDS format) not found at {SHARED_TFDS}")


def take(ds, n):
    return [b for _, b in zip(range(n), pipeline.as_numpy(ds), strict=False)]


@pytest.fixture
def mock_cifar100():
    with tfds.testing.mock_data(num_examples=20):
        yield


def train(name, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return pipeline.train_dataset(name, directory="/nonexistent", **kw)


def test_train_batches_shapes_and_determinism(mock_cifar100):
    a = take(train("cifar100", global_batch=8, seed=1), 3)
    assert a[0]["image"].shape == (8, 32, 32, 3) and a[0]["image"].dtype == np.float32
    assert a[0]["label"].dtype == np.int32 and a[0]["label"].shape == (8,)
    assert ((a[0]["label"] >= 0) & (a[0]["label"] < 100)).all()
    b = take(train("cifar100", global_batch=8, seed=1), 3)
    c = take(train("cifar100", global_batch=8, seed=2), 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_each_epoch_is_a_permutation_of_the_split(mock_cifar100):
    """20 examples, batch 4: batches 0-4 are epoch 0, 5-9 epoch 1; each epoch sees every label
    multiset once, in a different order."""
    batches = take(train("cifar100", global_batch=4, seed=0, ops=()), 10)
    epochs = [np.concatenate([b["image"] for b in batches[i:i + 5]]) for i in (0, 5)]
    key = lambda imgs: sorted(map(bytes, imgs.reshape(len(imgs), -1).round(4)))  # noqa: E731
    assert key(epochs[0]) == key(epochs[1])
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("start_step", [1, 3, 7])
def test_resume_from_a_step_sees_the_same_batches(mock_cifar100, start_step):
    """20 examples at batch 6: resuming at 3 or 7 starts mid-epoch, across an epoch boundary."""
    straight = take(train("cifar100", global_batch=6, seed=3, mixup_alpha=0.4), start_step + 3)
    resumed = take(train("cifar100", global_batch=6, seed=3, mixup_alpha=0.4,
                         start_step=start_step), 3)
    for x, y in zip(straight[start_step:], resumed, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_mixup_and_label_smoothing_give_soft_labels(mock_cifar100):
    batch = take(train("cifar100", global_batch=8, seed=0, mixup_alpha=0.5,
                       label_smoothing=0.1), 1)[0]
    assert batch["label"].shape == (8, 100) and batch["label"].dtype == np.float32
    np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-5)
    assert (batch["label"] >= 0.1 / 100 - 1e-6).all()


def test_randaugment_option_runs_in_the_pipeline(mock_cifar100):
    batch = take(train("cifar100", global_batch=4, seed=0, randaugment=(2, 15)), 1)[0]
    assert batch["image"].shape == (4, 32, 32, 3) and np.isfinite(batch["image"]).all()


def test_cutout_reaches_the_training_batches_only(mock_cifar100):
    """The option erases squares after normalisation (zeros, the dataset mean) in training
    batches; without it, or in evaluation, no 8 x 8 block of a normalised image is all zeros."""
    def zero_blocks(images):
        z = np.all(images == 0, axis=-1)
        return sum(z[:, i:i + 8, j:j + 8].all(axis=(1, 2)).sum() for i in range(25) for j in range(25))

    cut = take(train("cifar100", global_batch=8, seed=0, cutout=(16, 1.0)), 2)
    plain = take(train("cifar100", global_batch=8, seed=0), 2)
    assert all(zero_blocks(b["image"]) > 0 for b in cut)
    assert all(zero_blocks(b["image"]) == 0 for b in plain)
    eval_batch = take(pipeline.eval_dataset("cifar100", global_batch=8, directory="/nonexistent",
                                            process_index=0, process_count=1), 1)[0]
    assert zero_blocks(eval_batch["image"]) == 0


def test_eval_every_example_once_with_padding():
    """37 examples at batch 8: 5 batches, 3 padded, the examples in their stored order."""
    with tfds.testing.mock_data(num_examples=37):
        ds = pipeline.eval_dataset("cifar100", global_batch=8, directory="/nonexistent",
                                   process_index=0, process_count=1)
        batches = take(ds, 100)
        stored = [ex["image"] for ex in tfds.as_numpy(
            tfds.builder("cifar100", data_dir="/nonexistent").as_dataset(split="test"))]
    assert len(batches) == 5 and all(b["image"].shape[0] == 8 for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 37 and mask[:37].all() and not mask[37:].any()
    images = np.concatenate([b["image"] for b in batches])[:37]
    c100 = pipeline.spec("cifar100")
    expected = (np.stack(stored) / 255.0 - np.array(c100.mean)) / np.array(c100.std)
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)


def test_mock_imagenet_random_sizes_are_resized_before_batching():
    with tfds.testing.mock_data(num_examples=6):
        tr = take(pipeline.train_dataset("imagenet2012", global_batch=3, seed=0,
                                         directory="/nonexistent", process_index=0,
                                         process_count=1, randaugment=(2, 9), mixup_alpha=0.2), 2)
        ev = take(pipeline.eval_dataset("imagenet2012", global_batch=4, directory="/nonexistent",
                                        process_index=0, process_count=1), 5)
    assert tr[0]["image"].shape == (3, 224, 224, 3) and tr[0]["label"].shape == (3, 1000)
    assert len(ev) == 2 and ev[0]["image"].shape == (4, 224, 224, 3)
    assert np.concatenate([b["mask"] for b in ev]).sum() == 6


def test_missing_dataset_fails_fast_with_the_fix(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(pipeline.DatasetNotPrepared) as info:
        pipeline.builder("cifar100", str(tmp_path))
    assert f"python -m looksam.data prepare cifar100 --data-dir {tmp_path}" in str(info.value)
    with pytest.raises(pipeline.DatasetNotPrepared) as info:
        pipeline.builder("imagenet2012", str(tmp_path))
    assert "downloads/manual" in str(info.value) and "ILSVRC2012_img_train.tar" in str(info.value)
    assert time.perf_counter() - t0 < 30  # never TFDS's minutes-long offline download retries
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
        pipeline.builder("cifar1000", str(tmp_path))


def test_offline_a_missing_dataset_fails_within_the_probe_naming_the_fix(tmp_path, monkeypatch):
    import socket

    monkeypatch.delenv(pipeline.OFFLINE_VARIABLE)
    probed = []

    def unreachable(address, timeout):
        probed.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    prepared = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, *a, **k: prepared.append(self.name))
    with pytest.raises(pipeline.DatasetNotPrepared) as info:
        pipeline.builder("cifar10", str(tmp_path), download=True)
    assert probed == [(("www.cs.toronto.edu", 443), 3.0)] and prepared == []
    message = str(info.value)
    assert "did not answer within 3 s" in message
    assert f"python -m looksam.data prepare cifar10 --data-dir {tmp_path}" in message


def test_a_missing_dataset_is_downloaded_when_its_host_answers(tmp_path, monkeypatch):
    import socket

    monkeypatch.delenv(pipeline.OFFLINE_VARIABLE)

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Connection())
    prepared = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, *a, **k: prepared.append((self.name, self.data_dir)))
    b = pipeline.builder("cifar10", str(tmp_path), download=True)
    assert prepared == [("cifar10", b.data_dir)] and b.data_dir.startswith(str(tmp_path))
    # download=False, or $LOOKSAM_OFFLINE (set for every test), never downloads.
    with pytest.raises(pipeline.DatasetNotPrepared, match="not prepared"):
        pipeline.builder("cifar100", str(tmp_path), download=False)
    monkeypatch.setenv(pipeline.OFFLINE_VARIABLE, "1")
    with pytest.raises(pipeline.DatasetNotPrepared, match=r"LOOKSAM_OFFLINE is set"):
        pipeline.builder("cifar100", str(tmp_path), download=True)
    assert len(prepared) == 1


def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/some/where")
    assert pipeline.data_dir(None) == "/some/where"
    assert pipeline.data_dir("/explicit") == "/explicit"


# Independent facts about CIFAR-10 (Krizhevsky 2009), not read from TFDS or from this project:
# 50,000 training and 10,000 test images of 32x32, 5,000 / 1,000 per class, no exact duplicates
# within a split; per-channel pixel mean and standard deviation on the [0, 1] scale as quoted with
# the usual torchvision recipes (the training split's statistics normalise every split).
CIFAR10_TRAIN_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_TRAIN_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_TEST_MEAN = (0.4942, 0.4851, 0.4504)


def pixels(images, mean, std):
    """Normalised float32 batch -> the uint8 pixels it came from, checked to be whole numbers,
    which pins the normalisation to the constants given (the published CIFAR statistics)."""
    x = (images * np.float32(std) + np.float32(mean)) * np.float32(255)  # float32: errors ~1e-4
    r = np.round(x)
    assert np.abs(x - r).max() < 1e-2, "not (pixel / 255 - mean) / std with these constants"
    assert r.min() >= 0 and r.max() <= 255
    return r.astype(np.uint8)


def real_cifar10_epoch(process_index, process_count, global_batch=1000):
    """One epoch of the training stream of one process: the project's train_dataset on the real
    data with the crop/flip left out (ops=()), so only the normalisation touches the pixels.
    Returns (uint8 images, labels) of the epoch's 50,000 / process_count examples."""
    local = global_batch // process_count
    steps = 50_000 // global_batch  # the whole global batches of CIFAR-10's training epoch
    ds = pipeline.train_dataset("cifar10", global_batch=global_batch, seed=0, ops=(),
                                directory=str(SHARED_TFDS), process_index=process_index,
                                process_count=process_count)
    images, labels = [], []
    for batch in take(ds, steps):
        assert batch["image"].shape == (local, 32, 32, 3) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (local,) and batch["label"].dtype == np.int32
        images.append(pixels(batch["image"], CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD))
        labels.append(batch["label"])
    return np.concatenate(images), np.concatenate(labels)


def digests(images):
    return [hashlib.sha1(image.tobytes()).digest() for image in images]


@needs_cifar10
def test_real_cifar10_training_epoch_sees_every_image_once():
    """One epoch of the training pipeline, global batch 1000 on one process: 50 batches holding
    50,000 distinct images, 5,000 per class, with CIFAR-10's published channel means."""
    images, labels = real_cifar10_epoch(0, 1)
    assert images.shape == (50_000, 32, 32, 3)
    assert len(set(digests(images))) == 50_000
    assert np.bincount(labels, minlength=10).tolist() == [5_000] * 10
    means = images.reshape(-1, 3).mean(0, dtype=np.float64) / 255.0
    np.testing.assert_allclose(means, CIFAR10_TRAIN_MEAN, atol=5e-4)


@pytest.mark.slow  # end to end; kept to `make test-slow` (CI runs it): `make test` stays under 15 min
@needs_cifar10
def test_real_cifar10_two_processes_split_the_training_epoch():
    """Process 0 and 1 of 2 at global batch 1000 (500 each): disjoint halves of 25,000 that
    together are the 50,000 training images, 5,000 per class."""
    halves = [real_cifar10_epoch(index, 2) for index in range(2)]
    sets = [set(digests(images)) for images, _ in halves]
    assert [len(s) for s in sets] == [25_000, 25_000]
    assert not sets[0] & sets[1]
    assert len(sets[0] | sets[1]) == 50_000
    labels = np.concatenate([labels for _, labels in halves])
    assert np.bincount(labels, minlength=10).tolist() == [5_000] * 10
    images = np.concatenate([images for images, _ in halves])
    means = images.reshape(-1, 3).mean(0, dtype=np.float64) / 255.0
    np.testing.assert_allclose(means, CIFAR10_TRAIN_MEAN, atol=5e-4)


@needs_cifar10
def test_real_cifar10_evaluation_sees_every_test_image_once():
    """Two processes at global batch 768 (384 each): 5,000 test images each, padded to 14 batches
    (5,376 rows) with masked-out rows; together the 10,000 distinct test images, 1,000 per class,
    normalised with the training statistics."""
    images, labels = [], []
    for index in range(2):
        batches = list(pipeline.as_numpy(pipeline.eval_dataset(
            "cifar10", global_batch=768, directory=str(SHARED_TFDS), process_index=index,
            process_count=2)))
        assert len(batches) == 14 and all(b["image"].shape == (384, 32, 32, 3) for b in batches)
        mask = np.concatenate([b["mask"] for b in batches])
        assert mask.sum() == 5_000 and mask[:5_000].all() and not mask[5_000:].any()
        images.append(pixels(np.concatenate([b["image"] for b in batches])[mask],
                             CIFAR10_TRAIN_MEAN, CIFAR10_TRAIN_STD))
        labels.append(np.concatenate([b["label"] for b in batches])[mask])
    halves = [set(digests(x)) for x in images]
    assert [len(h) for h in halves] == [5_000, 5_000] and not halves[0] & halves[1]
    labels = np.concatenate(labels)
    assert np.bincount(labels, minlength=10).tolist() == [1_000] * 10
    means = np.concatenate(images).reshape(-1, 3).mean(0, dtype=np.float64) / 255.0
    np.testing.assert_allclose(means, CIFAR10_TEST_MEAN, atol=5e-4)


def test_prefetch_to_devices_builds_sharded_global_arrays():
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))
    n = 2 * len(jax.devices())
    host = [{"image": np.full((n, 2), i, np.float32), "label": np.arange(n) + i} for i in range(3)]
    out = list(pipeline.prefetch_to_devices(iter(host), sharding, size=2))
    assert len(out) == 3
    for i, batch in enumerate(out):
        assert batch["image"].sharding == sharding
        np.testing.assert_array_equal(np.asarray(batch["label"]), np.arange(n) + i)


def test_prepare_command_explains_imagenets_manual_download(tmp_path):
    from looksam.data.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["prepare", "imagenet2012", "--data-dir", str(tmp_path)])
    assert f"{tmp_path}/downloads/manual/" in str(info.value.code)
    assert "ILSVRC2012_img_val.tar" in str(info.value.code)


@needs_cifar10
def test_prepare_command_leaves_a_prepared_dataset_alone(capsys):
    from looksam.data.__main__ import main

    assert main(["prepare", "cifar10", "--data-dir", str(SHARED_TFDS)]) == 0
    assert "already prepared" in capsys.readouterr().out
