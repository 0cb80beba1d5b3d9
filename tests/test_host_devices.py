"""The CPU device-count default every entry point gets (looksam/host_devices.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from looksam import host_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("sizes, cores, expected", [
    ((128, 1000), 2, 2),    # gcd 8: both cores
    ((128, 1000), 16, 8),   # gcd 8 caps it
    ((128, 1000), 6, 4),    # largest divisor of 8 not above 6
    ((7, 1000), 4, 1),      # an odd batch: one device
    ((96, 96), 5, 4),       # divisors of 96 up to 5: 1, 2, 3, 4
    ((96, 96), 3, 3),
    ((8, 8), 1, 1),
])
def test_device_count(sizes, cores, expected):
    assert host_devices.device_count(sizes, cores) == expected


def trainer(**kw):
    return types.SimpleNamespace(**{"batch_size": 128, "eval_batch_size": 1000, "microbatch": None,
                                    "num_devices": None} | kw)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(host_devices, "_backend_started", lambda: False)
    monkeypatch.setattr(host_devices, "available_cores", lambda: 4)


def test_sets_the_count_for_the_batch(fresh):
    env = {}
    assert host_devices.configure(trainer(), env) is None
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    env = {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}  # other flags stay
    host_devices.configure(trainer(microbatch=2), env)
    assert env["XLA_FLAGS"] == "--xla_cpu_use_onednn=true --xla_force_host_platform_device_count=2"


def test_the_users_choice_wins(fresh):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    assert "XLA_FLAGS" in host_devices.configure(trainer(), env)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
    env = {}
    host_devices.configure(trainer(num_devices=3), env)  # exactly what trainer.num_devices asks
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"


def test_too_late_once_jax_started():
    import jax

    jax.devices()
    env = {}
    assert "already started" in host_devices.configure(trainer(), env) and env == {}


def test_looksam_train_splits_the_batch_by_default(tmp_path):
    """The entry point with no XLA_FLAGS: as many CPU devices as the cores and batch allow."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {
        "JAX_PLATFORMS": "cpu", "WANDB_MODE": "disabled", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "looksam.train", "scale=smoke", "model=cnn",
                          "logger=disabled", f"trainer.workdir={tmp_path}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    expected = host_devices.device_count((8, 8), host_devices.available_cores())
    hw = summary["hardware"]
    assert hw["device_count"] == expected
    assert hw["xla_flags"] == f"--xla_force_host_platform_device_count={expected}"
    assert hw["cpu_cores"] == host_devices.available_cores() and hw["cpu_model"]
    assert all(hw["versions"][n] for n in ("jax", "jaxlib", "flax", "optax"))
