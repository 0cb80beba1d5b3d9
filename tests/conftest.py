"""Small problems shared by the tests: an MLP without state and a net with BatchNorm."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# 8 simulated CPU devices for the sharding tests, also under a bare `pytest` (make test sets it too).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No test may download a dataset, whatever the network: a missing one fails in its probe.
os.environ["LOOKSAM_OFFLINE"] = "1"
# One XLA compilation cache per test session, shared by the xdist workers (they inherit this
# process's environment) and the trainers tests start as subprocesses: many tests compile the same
# smoke programs. Back to back on 2 cores, tests/test_train.py took 138 s without and 94 s with it.
# Created empty each session, so `make test` times what a clean CI checkout gets.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="looksam-tests-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(8)(x))
        return nn.Dense(3)(x)


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(nn.tanh(x))


def make_batch(seed, n=12, dim=5, classes=3):
    kx, ky = jax.random.split(jax.random.key(seed))
    return {"x": jax.random.normal(kx, (n, dim)), "y": jax.random.randint(ky, (n,), 0, classes)}


class Problem:
    def __init__(self, loss_fn, params, batch_fn, has_state):
        self.loss_fn, self.params, self.batch_fn, self.has_state = loss_fn, params, batch_fn, has_state

    def batch(self, seed=0, n=12):
        return self.batch_fn(seed, n)


def mlp_problem():
    model = MLP()
    params = model.init(jax.random.key(1), jnp.zeros((1, 5)))["params"]

    def loss_fn(p, b):
        logits = model.apply({"params": p}, b["x"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, b["y"])
        return losses, {"logits_mean": logits.mean()}

    return Problem(loss_fn, params, make_batch, has_state=False)


def bn_problem():
    model = BNNet()
    variables = model.init(jax.random.key(2), jnp.ones((4, 5)))
    stats = jax.tree.map(lambda x: x + 0.3, variables["batch_stats"])

    def loss_fn(p, b):
        logits, updates = model.apply({"params": p, "batch_stats": stats}, b["x"],
                                      mutable=["batch_stats"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, b["y"])
        return losses, updates["batch_stats"]

    return Problem(loss_fn, variables["params"], make_batch, has_state=True)


@pytest.fixture(params=["mlp", "bn"])
def problem(request):
    return mlp_problem() if request.param == "mlp" else bn_problem()


@pytest.fixture
def mlp():
    return mlp_problem()
