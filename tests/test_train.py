"""End-to-end smoke runs of the trainer on mock data: outputs, devices, resume, divergence."""

from __future__ import annotations

import glob
import json
import os
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hydra import compose, initialize_config_dir

from looksam import config, train

CONFIGS = str(pathlib.Path(__file__).resolve().parents[1] / "configs")


def cfg_for(workdir, *overrides):
    config.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=["scale=smoke", "logger=offline",
                                            f"trainer.workdir={workdir}", *overrides])


def final_state(workdir, step):
    """The saved state as host arrays, whatever mesh or process count wrote it."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                          checkpointer.metadata(path).item_metadata)
    return checkpointer.restore(path, target)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol, atol)


@pytest.fixture(autouse=True)
def no_wandb_network(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc API key


def test_smoke_run_writes_every_output(tmp_path):
    workdir = str(tmp_path / "run")
    summary = train.run(cfg_for(workdir, "sam=looksam", "sam.k=2"), workdir)
    on_disk = json.loads(pathlib.Path(workdir, "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    for key in ("final_test_accuracy", "best_test_accuracy", "final_train_loss", "images_per_sec",
                "images_per_sec_per_device", "seconds_per_epoch", "total_seconds", "compile_seconds",
                "code_version"):
        assert on_disk[key] is not None, key
    assert 0.0 <= on_disk["final_test_accuracy"] <= 1.0
    assert on_disk["config"]["sam"]["method"] == "looksam" and on_disk["step"] == 4
    assert on_disk["cost"]["sam_steps"] == 2 and on_disk["cost"]["reuse_steps"] == 2  # k = 2
    assert on_disk["cost"]["passes"] == pytest.approx(2 * 2 + 2 * 1)
    assert on_disk["hardware"]["device_count"] == len(jax.devices())
    assert glob.glob(f"{workdir}/**/events.out.tfevents.*", recursive=True), "TensorBoard events"
    assert glob.glob(f"{workdir}/wandb/offline-run-*"), "offline wandb run"
    assert os.path.isdir(f"{workdir}/checkpoints/4")


def test_eight_devices_equal_one(tmp_path):
    assert len(jax.devices()) == 8, "tests/conftest.py asks for 8 CPU devices"
    states = []
    for devices in (1, 8):
        workdir = str(tmp_path / f"d{devices}")
        train.run(cfg_for(workdir, "sam=sam", f"trainer.num_devices={devices}"), workdir)
        states.append(final_state(workdir, 4))
    assert_trees_close(states[0], states[1])


def test_resume_equals_a_straight_run(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    # Two mock epochs of 4 steps: the schedule's length; max_steps stops the first leg at 3.
    common = ["sam=looksam", "sam.k=3", "trainer.checkpoint_every_steps=2", "scale.epochs=2",
              "scale.max_steps=6"]
    s1 = train.run(cfg_for(straight, *common), straight)
    first = train.run(cfg_for(split, *common[:-1], "scale.max_steps=3"), split)
    assert first["step"] == 3
    s2 = train.run(cfg_for(split, *common), split)  # same workdir: resumes from step 3
    assert s2["step"] == 6 and s2["wandb_id"] == first["wandb_id"]
    assert_trees_close(final_state(straight, 6), final_state(split, 6))
    for key in ("final_test_accuracy", "final_train_loss"):  # best: the first leg evaluated at 3 too
        assert s2[key] == pytest.approx(s1[key], rel=1e-5), key
    assert s2["cost"] == s1["cost"]


def test_non_finite_loss_ends_with_status_diverged(tmp_path):
    workdir = str(tmp_path / "nan")
    summary = train.run(cfg_for(workdir, "optimizer.lr=1e30", "trainer.checkpoint_every_steps=1",
                                "scale.max_steps=6", "trainer.log_every_steps=1"), workdir)
    assert summary["status"] == "diverged" and "non-finite" in summary["message"]
    kept = sorted(int(p.name) for p in pathlib.Path(workdir, "checkpoints").iterdir() if p.name.isdigit())
    assert kept and max(kept) < summary["step"]  # the last good checkpoint, not the bad step
    assert json.loads(pathlib.Path(workdir, "summary.json").read_text())["status"] == "diverged"


def test_bad_config_fails_before_compiling(tmp_path):
    with pytest.raises(ValueError, match="sam: k=0"):
        train.run(cfg_for(str(tmp_path), "sam=looksam", "sam.k=0"), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()
