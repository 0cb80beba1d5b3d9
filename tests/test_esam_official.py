"""ESAM as its authors' code runs it (the `code` reading of ESAM's tables): the official selection
rule, BatchNorm statistics from every forward, and one whole step against a transcription of
dydjw9/Efficient_SAM's `utils/Esam.py` (`ESAM.step`) on two DDP ranks with BatchNorm."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from looksam import sam, train
from looksam.models import layers
from looksam.sam import esam as esam_lib

# --- the selection rule ------------------------------------------------------------------------


@pytest.mark.parametrize("n,gamma,expected", [(64, 0.5, 31), (128, 0.5, 63), (10, 0.7, 6),
                                              (10, 0.3, 2), (64, 0.995, 64)])
def test_official_count_is_one_below_int_gamma_n(n, gamma, expected):
    """Esam.py: position = int(len(targets) * prob), B+ = {s_i > the position-th largest};
    prob >= 0.99 keeps everything. 0.7 * 10 is 7.000000000000001 in floats: int() gives 7."""
    assert esam_lib.sds_count(gamma, n, "official") == expected
    assert esam_lib.sds_count(0.5, 64, "ceil") == 32  # the paper's reading keeps one more


def _official_subset(s, gamma):
    """Esam.py's selection, in numpy: indices with s_i strictly above the int(n gamma)-th largest."""
    position = int(len(s) * gamma)
    cutoff = np.sort(s)[::-1][position - 1]
    return set(np.flatnonzero(s > cutoff))


def test_official_selection_picks_the_examples_strictly_above_the_cutoff():
    s = np.random.default_rng(0).normal(size=64).astype(np.float32)
    idx, weights = esam_lib.sds_select(jnp.asarray(s), 0.5, "official")
    assert set(np.asarray(idx)) == _official_subset(s, 0.5) and len(idx) == 31
    np.testing.assert_allclose(weights, 1 / 31, rtol=1e-6)


def test_official_selection_gives_ties_at_the_cutoff_no_weight():
    """Four examples share the 5th-largest value: `>` keeps only the 3 above it, so the mean runs
    over 3 examples, not over the static 4 gathered ones."""
    s = np.array([9, 8, 7, 5, 5, 5, 5, 1, 0, -1], np.float32)  # position int(10 * 0.5) = 5
    idx, weights = esam_lib.sds_select(jnp.asarray(s), 0.5, "official")
    kept = {int(i) for i, w in zip(np.asarray(idx), np.asarray(weights), strict=True) if w > 0}
    assert kept == _official_subset(s, 0.5) == {0, 1, 2}
    np.testing.assert_allclose(np.asarray(weights).sum(), 1.0, rtol=1e-6)


def test_a_selection_that_keeps_nobody_is_refused_naming_the_fix():
    est = sam.make("esam", beta=1.0, gamma=0.1, selection="official")
    batch = {"x": jnp.ones((8, 3)), "y": jnp.zeros(8, jnp.int32)}
    with pytest.raises(ValueError, match="int\\(gamma \\* n\\) - 1 = -1 of a group of 8"):
        est.gradient(lambda p, b: (jnp.zeros(8), None), {"w": jnp.ones(3)}, batch,
                     est.init({"w": jnp.ones(3)}))
    with pytest.raises(ValueError, match="selection='largest'"):
        sam.make("esam", selection="largest")


# --- BatchNorm statistics from every forward ----------------------------------------------------


def test_chained_updates_equal_the_forwards_run_one_after_the_other():
    """chain_batch_stats composes updates that each started from r0; threading the statistics
    through three real BatchNorm forwards must give the same running mean and variance."""
    bn = nn.BatchNorm(use_running_average=False, momentum=layers.BATCHNORM_MOMENTUM)
    xs = [jax.random.normal(jax.random.key(i), (16, 4)) * (i + 1) + i for i in range(3)]
    variables = bn.init(jax.random.key(9), xs[0])
    r0 = jax.tree.map(lambda v: v + 0.5, variables["batch_stats"])
    params = variables["params"]
    separately = [bn.apply({"params": params, "batch_stats": r0}, x, mutable=["batch_stats"])[1]
                  ["batch_stats"] for x in xs]
    threaded = r0
    for x in xs:
        threaded = bn.apply({"params": params, "batch_stats": threaded}, x,
                            mutable=["batch_stats"])[1]["batch_stats"]
    chained = train.chain_batch_stats(r0, separately)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), chained, threaded)
    assert not np.allclose(separately[-1]["mean"], threaded["mean"])  # the order matters


# --- one step against the official algorithm -----------------------------------------------------


class Net(nn.Module):
    """Dense, BatchNorm (our models' momentum), Dense: small, with running statistics."""

    @nn.compact
    def __call__(self, x, train=True):
        x = nn.Dense(6)(x.reshape(x.shape[0], -1))
        x = layers.batch_norm(train, dtype=jnp.float32)(x)
        return nn.Dense(4)(nn.relu(x))


def official_step(model, params, stats, groups, mask, rho, beta, gamma):
    """ESAM.step of utils/Esam.py on len(groups) DDP ranks, step by step.

    Each rank: a train-mode forward on its examples (BatchNorm updates its buffers), a backward
    without DDP's all-reduce in which the dropped tensors (requires_grad False) get no gradient;
    first_step: e = rho / (||kept g|| + 1e-7) / beta * g on the kept tensors; a no-grad
    train-mode forward at w + e for l_after; position = int(n * gamma), B+ = {l_after - l_before >
    the position-th largest}; a train-mode forward and backward on B+, all-reduced (mean over
    ranks). Buffers: each forward continues from the last one's. DDP broadcasts rank 0's buffers;
    we keep the mean over ranks (the same in expectation), so that is what is compared.
    """
    leaves, treedef = jax.tree.flatten(params)
    keep = jax.tree.leaves(mask)

    def forward(p, r, batch):
        logits, new = model.apply({"params": p, "batch_stats": r}, batch["image"], train=True,
                                  mutable=["batch_stats"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return losses, new["batch_stats"]

    def mean_loss(p, r, batch):
        losses, r = forward(p, r, batch)
        return losses.mean(), r

    grads, buffers = [], []
    for batch in groups:
        r = stats
        (_, r), g = jax.value_and_grad(mean_loss, has_aux=True)(params, r, batch)
        l_before = forward(params, stats, batch)[0]  # the same logits as the pass above
        g_leaves = jax.tree.leaves(g)
        norm = np.sqrt(sum(float(jnp.sum(gl ** 2)) for gl, k in zip(g_leaves, keep, strict=True) if k))
        scale = rho / (norm + 1e-7) / beta
        perturbed = jax.tree.unflatten(treedef, [w + scale * gl if k else w for w, gl, k in
                                                 zip(leaves, g_leaves, keep, strict=True)])
        l_after, r = forward(perturbed, r, batch)
        sharpness = np.asarray(l_after - l_before)
        position = int(len(sharpness) * gamma)
        cutoff = np.sort(sharpness)[::-1][position - 1]
        chosen = np.flatnonzero(sharpness > cutoff)
        subset = {k: v[chosen] for k, v in batch.items()}
        (_, r), g_s = jax.value_and_grad(mean_loss, has_aux=True)(perturbed, r, subset)
        grads.append(g_s)
        buffers.append(r)
    mean = lambda trees: jax.tree.map(lambda *xs: sum(xs) / len(xs), *trees)  # noqa: E731
    return mean(grads), mean(buffers)


def test_one_step_with_every_official_option_equals_the_official_algorithm():
    """m = 16 groups of a 32-example batch (two ranks of 16), the official selection (7 of 16 at
    gamma 0.5), SWP at beta 0.6 with the mask forced equal on both sides, BatchNorm statistics
    from every forward: the gradient handed to SGD and the running statistics agree."""
    model = Net()
    images = jax.random.normal(jax.random.key(0), (32, 2, 2, 3))
    labels = jax.random.randint(jax.random.key(1), (32,), 0, 4)
    variables = model.init(jax.random.key(2), images[:2])
    params = variables["params"]
    stats = jax.tree.map(lambda v: v + 0.2, variables["batch_stats"])
    rho, beta, gamma = 0.5, 0.6, 0.5
    est = sam.make("esam", rho=rho, beta=beta, gamma=gamma, m=16, selection="official")
    rng = next(jax.random.key(s) for s in range(100)  # a mask that keeps some leaves, not all
               if 0 < sum(map(bool, jax.tree.leaves(esam_lib.swp_mask(jax.random.key(s), params, beta))))
               < len(jax.tree.leaves(params)))
    mask = esam_lib.swp_mask(rng, params, beta)
    batch = {"image": images, "label": labels}

    loss_fn = train.make_loss_fn(model, stats, jax.random.key(3))
    grads, _, out = jax.jit(lambda p, b: est.gradient(loss_fn, p, b, est.init(p), rng))(params, batch)
    ours_stats = train.chain_batch_stats(stats, [out.aux["batch_stats"]] + [
        a["batch_stats"] for a in out.forward_aux])

    groups = [{k: v[i * 16:(i + 1) * 16] for k, v in batch.items()} for i in range(2)]
    want_grads, want_stats = official_step(model, params, stats, groups, mask, rho, beta, gamma)
    np.testing.assert_allclose(ravel_pytree(grads)[0], ravel_pytree(want_grads)[0], rtol=2e-5, atol=2e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), ours_stats, want_stats)
    np.testing.assert_allclose(out.metrics["selected_fraction"], 7 / 16)
    # The options each matter here: the paper's selection, or the clean pass's statistics, differ.
    ceil = sam.make("esam", rho=rho, beta=beta, gamma=gamma, m=16)
    ceil_grads = jax.jit(lambda p, b: ceil.gradient(loss_fn, p, b, ceil.init(p), rng)[0])(params, batch)
    assert not np.allclose(ravel_pytree(ceil_grads)[0], ravel_pytree(want_grads)[0], rtol=1e-3)
    assert not np.allclose(ravel_pytree(out.aux["batch_stats"])[0], ravel_pytree(want_stats)[0], rtol=1e-3)


@pytest.mark.parametrize("method,hp", [("esam", dict(beta=0.6, gamma=0.5, selection="official")),
                                       ("sam", {}), ("looksam", dict(k=2))])
def test_m_groups_looped_equal_m_groups_vmapped(method, hp):
    """group_map only changes how the m-groups are scheduled (on CPU, "auto" loops: vmapped
    groups make grouped convolutions, which XLA:CPU runs slowly): gradients, metrics and
    BatchNorm statistics agree."""
    model = Net()
    images = jax.random.normal(jax.random.key(4), (24, 2, 2, 3))
    batch = {"image": images, "label": jax.random.randint(jax.random.key(5), (24,), 0, 4)}
    variables = model.init(jax.random.key(6), images[:2])
    loss_fn = train.make_loss_fn(model, variables["batch_stats"], jax.random.key(7))
    outs = []
    for group_map in ("loop", "vmap"):
        est = sam.make(method, m=8, group_map=group_map, **hp)
        outs.append(jax.jit(lambda p, b, e=est: e.gradient(loss_fn, p, b, e.init(p), jax.random.key(8),
                                                           sam_step=True))(variables["params"], batch))
    (g_loop, _, out_loop), (g_vmap, _, out_vmap) = outs
    np.testing.assert_allclose(ravel_pytree(g_loop)[0], ravel_pytree(g_vmap)[0], rtol=1e-5, atol=1e-6)
    for key in out_vmap.metrics:
        np.testing.assert_allclose(out_loop.metrics[key], out_vmap.metrics[key], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 (out_loop.aux, out_loop.forward_aux), (out_vmap.aux, out_vmap.forward_aux))
