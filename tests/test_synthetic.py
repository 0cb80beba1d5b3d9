"""The numpy mock-data path: batches as the trainer needs them, and a whole run without TensorFlow."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from looksam.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KW = dict(image_size=4, num_classes=5)


def take(stream, n):
    return list(itertools.islice(stream, n))


def test_train_batches_are_epochs_of_every_example_once_and_resume_exactly():
    n, batch = 12, 4
    stream = take(synthetic.train_batches(n, global_batch=batch, seed=1, **KW), 6)
    images, _ = synthetic.examples(n, 4, 5, "train")
    for epoch in (stream[:3], stream[3:]):
        seen = np.concatenate([b["image"] for b in epoch])
        # The epoch is a permutation of the n fixed examples.
        order = [int(np.flatnonzero((images == x).all(axis=(1, 2, 3)))[0]) for x in seen]
        assert sorted(order) == list(range(n))
    assert not np.array_equal(stream[0]["image"], stream[3]["image"])  # reshuffled per epoch
    resumed = take(synthetic.train_batches(n, global_batch=batch, seed=1, start_step=4, **KW), 2)
    for a, b in zip(stream[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert stream[0]["image"].dtype == np.float32 and stream[0]["label"].dtype == np.int32
    other = next(synthetic.train_batches(n, global_batch=batch, seed=2, **KW))
    assert not np.array_equal(other["image"], stream[0]["image"])


def test_processes_hold_their_rows_of_the_same_global_batch():
    one = take(synthetic.train_batches(16, global_batch=8, seed=0, mixup_alpha=0.4, **KW), 3)
    halves = [take(synthetic.train_batches(16, global_batch=8, seed=0, mixup_alpha=0.4,
                                           process_index=i, process_count=2, **KW), 3)
              for i in range(2)]
    for step in range(3):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                one[step][key], np.concatenate([halves[0][step][key], halves[1][step][key]]))


def test_soft_labels_smooth_and_mix_as_the_tfds_path_does():
    eps, n = 0.1, 8
    plain = next(synthetic.train_batches(n, global_batch=n, seed=0, **KW))
    smooth = next(synthetic.train_batches(n, global_batch=n, seed=0, label_smoothing=eps, **KW))
    want = np.full((n, 5), eps / 5, np.float32)
    want[np.arange(n), plain["label"]] += 1 - eps
    np.testing.assert_allclose(smooth["label"], want, rtol=1e-6)
    mixed = next(synthetic.train_batches(n, global_batch=n, seed=0, mixup_alpha=1.0, **KW))
    # One lambda >= 1/2 for the batch: each row mixed with the row before it (rolled by one).
    onehot = np.eye(5, dtype=np.float32)[plain["label"]]
    lam = float(np.linalg.lstsq((onehot - np.roll(onehot, 1, 0)).reshape(-1, 1),
                                (mixed["label"] - np.roll(onehot, 1, 0)).reshape(-1), rcond=None)[0][0])
    assert 0.5 <= lam <= 1.0
    np.testing.assert_allclose(mixed["label"], lam * onehot + (1 - lam) * np.roll(onehot, 1, 0),
                               atol=1e-6)
    np.testing.assert_allclose(
        mixed["image"], lam * plain["image"] + (1 - lam) * np.roll(plain["image"], 1, 0), atol=1e-5)
    np.testing.assert_allclose(mixed["label"].sum(1), 1.0, rtol=1e-6)


def test_eval_batches_cover_the_split_once_padded_with_masked_rows():
    batches = list(synthetic.eval_batches(10, global_batch=4, split="test", **KW))
    assert [b["image"].shape for b in batches] == [(4, 4, 4, 3)] * 3
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.tolist() == [True] * 10 + [False] * 2
    images, labels = synthetic.examples(10, 4, 5, "test")
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[:10], images)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:10], labels)
    halves = [list(synthetic.eval_batches(10, global_batch=4, process_index=i, process_count=2,
                                          **KW)) for i in range(2)]
    assert sum(b["mask"].sum() for h in halves for b in h) == 10
    train_images, _ = synthetic.examples(10, 4, 5, "train")
    assert not np.array_equal(images, train_images)  # splits differ


def test_too_few_examples_for_a_batch_is_refused():
    with pytest.raises(ValueError, match="mock_examples=4 is fewer than one batch of 8"):
        next(synthetic.train_batches(4, global_batch=8, seed=0, **KW))


def test_a_mock_run_completes_where_tensorflow_cannot_be_imported(tmp_path):
    # A fresh process in which `import tensorflow` fails, as on a JAX-only accelerator machine.
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = None
        sys.modules["tensorflow_datasets"] = None
        sys.argv = ["looksam-train", "scale=smoke", "model=cnn", "logger=disabled",
                    "trainer.workdir={tmp_path}"]
        from looksam import train
        train.main()
        assert not any(m.startswith("tensorflow") and sys.modules[m] is not None
                       for m in sys.modules), "TensorFlow was imported"
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 4
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0
    log = out.stdout + out.stderr  # it says once why there is no TensorBoard
    assert log.count("clu's metric writers need TensorFlow") == 1
