"""ESAM Figure 6 (`subset_cosines`): the cosines of the B+ and B- gradients with the batch's.

The reference below is independent of `looksam.sam`: a linear softmax model on one flat vector,
B+ found by brute force from the per-example sharpness, and every subset's mean gradient taken
directly with `jax.grad` (no derivation through the whole-batch gradient).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from looksam import config, sam
from looksam.sam import esam as esam_lib
from reproduce import __main__ as reproduce_cli
from reproduce import registry
from results import figures

DIM, CLASSES = 4, 3
KEYS = ("esam_cos_selected_sam", "esam_cos_rejected_sam", "esam_cos_selected_empirical",
        "esam_cos_rejected_empirical")
RTOL, ATOL = 1e-4, 1e-5


def loss_fn(p, b):
    logits = b["x"] @ p["w"] + p["b"]
    return -jax.nn.log_softmax(logits)[jnp.arange(b["y"].shape[0]), b["y"]], ()


def problem(n, seed=0):
    kw, kb, kx, ky = jax.random.split(jax.random.key(seed), 4)
    params = {"b": 0.5 * jax.random.normal(kb, (CLASSES,)),
              "w": jax.random.normal(kw, (DIM, CLASSES))}
    batch = {"x": 2.0 * jax.random.normal(kx, (n, DIM)),
             "y": jax.random.randint(ky, (n,), 0, CLASSES)}
    return params, batch


def reference(params, batch, rho, gamma, beta=1.0, keep=None):
    """The four cosines by brute force on one group (the whole `batch`)."""
    w, unravel = ravel_pytree(params)  # ravel order = jax.tree.leaves order = swp_mask's order
    n = batch["y"].shape[0]

    def losses(v, idx):
        return loss_fn(unravel(v), {k: x[np.asarray(idx)] for k, x in batch.items()})[0]

    def grad(v, idx):
        return np.asarray(jax.grad(lambda u: jnp.mean(losses(u, idx)))(v))

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    every = np.arange(n)
    g = grad(w, every)
    sizes = [x.size for x in jax.tree.leaves(params)]
    keep = [True] * len(sizes) if keep is None else keep
    mask = np.concatenate([np.full(s, float(k)) for s, k in zip(sizes, keep, strict=True)])
    eps = (rho / beta) * mask * g / np.linalg.norm(mask * g)
    s = np.asarray(losses(w + eps, every) - losses(w, every))
    count = math.ceil(gamma * n)
    order = np.argsort(-s)
    assert s[order[count - 1]] > s[order[count]] + 1e-6, "ties at the cut: pick another problem"
    plus, minus = np.sort(order[:count]), np.sort(order[count:])
    return {"esam_cos_selected_sam": cos(grad(w + eps, plus), grad(w + eps, every)),
            "esam_cos_rejected_sam": cos(grad(w + eps, minus), grad(w + eps, every)),
            "esam_cos_selected_empirical": cos(grad(w, plus), g),
            "esam_cos_rejected_empirical": cos(grad(w, minus), g)}


def run(est, params, batch, rng=None):
    fn = jax.jit(lambda p, b, r: est.gradient(loss_fn, p, b, est.init(p), r, sam_step=True))
    return fn(params, batch, rng)


def check(metrics, want):
    for k in KEYS:
        np.testing.assert_allclose(float(metrics[k]), want[k], RTOL, ATOL, err_msg=k)


def partial_mask_key(params, beta):
    """A key whose SWP mask keeps some leaves and drops others."""
    for s in range(1000):
        bits = [bool(b) for b in jax.tree.leaves(esam_lib.swp_mask(jax.random.key(s), params, beta))]
        if 0 < sum(bits) < len(bits):
            return jax.random.key(s), bits
    raise AssertionError("no key with a partial mask")


@pytest.mark.parametrize("gamma", [0.5, 0.3])
def test_cosines_without_swp(gamma):
    """beta = 1: eps = rho g / ||g||, SAM's perturbation."""
    params, batch = problem(n=10)
    rho = 0.5
    want = reference(params, batch, rho, gamma)
    est = sam.make("esam", rho=rho, beta=1.0, gamma=gamma, subset_cosines=True)
    grads, _, out = run(est, params, batch)
    check(out.metrics, want)
    assert len({round(v, 4) for v in want.values()}) == 4  # four distinct values: a real test
    assert all(-1 <= float(out.metrics[k]) <= 1 + 1e-6 for k in KEYS)


def test_cosines_with_the_swp_mask():
    """beta < 1: eps from the masked gradient, the mask drawn from the step's rng."""
    params, batch = problem(n=10, seed=1)
    rho, beta, gamma = 0.5, 0.5, 0.5
    key, bits = partial_mask_key(params, beta)
    want = reference(params, batch, rho, gamma, beta=beta, keep=bits)
    est = sam.make("esam", rho=rho, beta=beta, gamma=gamma, subset_cosines=True)
    _, _, out = run(est, params, batch, key)
    check(out.metrics, want)
    unmasked = reference(params, batch, rho, gamma)  # the mask matters for the *_sam cosines
    assert abs(unmasked["esam_cos_rejected_sam"] - want["esam_cos_rejected_sam"]) > 1e-3


@pytest.mark.parametrize("n,microbatch", [(8, 4), (12, 4)])  # 12: B+ and B- of 6, padded to 8
def test_microbatch_gives_the_same_cosines(n, microbatch):
    params, batch = problem(n=n, seed=2)
    key = jax.random.key(3)
    kw = dict(rho=0.5, beta=0.6, gamma=0.5, subset_cosines=True)
    whole = run(sam.make("esam", **kw), params, batch, key)[2].metrics
    chunked = run(sam.make("esam", microbatch=microbatch, **kw), params, batch, key)[2].metrics
    for k in KEYS:
        np.testing.assert_allclose(float(chunked[k]), float(whole[k]), rtol=0, atol=1e-5, err_msg=k)
    check(chunked, reference(params, batch, 0.5, 0.5, beta=0.6,
                             keep=[bool(b) for b in jax.tree.leaves(
                                 esam_lib.swp_mask(key, params, 0.6))]))


@pytest.mark.parametrize("microbatch", [None, 8])
def test_m_sharpness_averages_the_per_group_cosines(microbatch):
    n, m, rho, gamma = 16, 4, 0.5, 0.5
    params, batch = problem(n=n, seed=4)
    groups = [reference(params, {k: x[j * m:(j + 1) * m] for k, x in batch.items()}, rho, gamma)
              for j in range(n // m)]
    want = {k: float(np.mean([grp[k] for grp in groups])) for k in KEYS}
    est = sam.make("esam", rho=rho, beta=1.0, gamma=gamma, m=m, microbatch=microbatch,
                   subset_cosines=True)
    _, _, out = run(est, params, batch)
    check(out.metrics, want)


def test_the_update_and_other_metrics_are_unchanged():
    params, batch = problem(n=10)
    key = jax.random.key(5)
    plain = run(sam.make("esam", rho=0.5, gamma=0.5), params, batch, key)
    with_cos = run(sam.make("esam", rho=0.5, gamma=0.5, subset_cosines=True), params, batch, key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), plain[0], with_cos[0])
    assert set(with_cos[2].metrics) == set(plain[2].metrics) | set(KEYS)
    for k, v in plain[2].metrics.items():
        np.testing.assert_allclose(with_cos[2].metrics[k], v, rtol=1e-6, err_msg=k)


@pytest.mark.parametrize("method,kwargs,pattern", [
    ("sam", {}, "subset_cosines.*'esam'"),
    ("looksam", dict(subset_cosines=False), "subset_cosines.*'esam'"),
    ("esam", dict(gamma=1.0), "subset_cosines needs gamma < 1"),
    ("esam", dict(gamma=0.5, m=1), "non-empty B-"),
    ("esam", dict(gamma=0.9, m=4), "non-empty B-"),  # ceil(3.6) = 4 = m
])
def test_invalid_uses_raise(method, kwargs, pattern):
    kwargs = {"subset_cosines": True, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        sam.make(method, **kwargs)


def test_subset_cosines_must_be_a_bool():
    with pytest.raises(ValueError, match="subset_cosines must be True or False"):
        sam.make("esam", subset_cosines=1)


@pytest.mark.parametrize("gamma", [0.5, 0.3])
def test_cost_counts_one_more_pass(gamma):
    plain = sam.make("esam", gamma=gamma)
    on = sam.make("esam", gamma=gamma, subset_cosines=True)
    assert on.passes(True) == pytest.approx(plain.passes(True) + 1)
    assert on.passes(False) == plain.passes(False)
    assert on.ideal_cost == pytest.approx(2 + 1 / 3 + gamma)


def test_config_and_figure6_reach_the_metrics():
    """sam.subset_cosines from a config reaches the estimator; Figure 6 turns it on, its cost
    estimate counts it, and its series resolve to the trainer's train_<key> tags."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(config.Config)
    cfg.sam.method = "esam"
    assert config.estimator(cfg).subset_cosines is False
    cfg.sam.subset_cosines = True
    assert config.estimator(cfg).subset_cosines is True
    table = registry.load("esam_figure6")
    assert len(table.cells) == 4 and all("sam.subset_cosines=true" in c.overrides for c in table.cells)
    cell = table.cell("resnet18_cifar10/esam")
    assert reproduce_cli.cell_cost(cell) == pytest.approx(2 + 1 / 3 + 0.5)
    series, shared = figures._curve_series(table.plot, "diagnostics")
    assert shared and [s["key"] for s in series] == list(KEYS)
    for s in series:
        assert f"train_{s['key']}" in s["tags"]
