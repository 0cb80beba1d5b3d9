"""Each method against a direct transcription of its formula (tests/reference.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from looksam import sam
from looksam.sam import esam as esam_lib

import reference as ref

RTOL, ATOL = 2e-5, 2e-6


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def run(est, problem, params, batch, state, rng=None, sam_step=None):
    fn = jax.jit(lambda p, b, s, r: est.gradient(problem.loss_fn, p, b, s, r, sam_step=sam_step))
    return fn(params, batch, state, rng)


def test_none_is_the_plain_gradient(problem):
    batch = problem.batch()
    f = ref.Flat(problem.loss_fn, problem.params, batch)
    est = sam.make("none")
    grads, state, out = run(est, problem, problem.params, batch, est.init(problem.params))
    np.testing.assert_allclose(flat(grads), f.grad(f.w), RTOL, ATOL)
    assert int(state.step) == 1 and float(out.metrics["sam_step"]) == 0.0


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_sam(problem, rho):
    batch = problem.batch()
    f = ref.Flat(problem.loss_fn, problem.params, batch)
    g, g_s = ref.sam_grad(f, f.w, rho)
    est = sam.make("sam", rho=rho)
    grads, _, out = run(est, problem, problem.params, batch, est.init(problem.params))
    np.testing.assert_allclose(flat(grads), g_s, RTOL, ATOL)
    assert not np.allclose(g_s, g, rtol=1e-3)  # the perturbation really moved the gradient
    np.testing.assert_allclose(out.metrics["grad_norm"], np.linalg.norm(g), RTOL)
    cos = np.dot(g, g_s) / np.linalg.norm(g) / np.linalg.norm(g_s)
    np.testing.assert_allclose(out.metrics["cos_g_gs"], cos, RTOL)


def test_sam_aux_comes_from_the_clean_pass(problem):
    batch = problem.batch()
    est = sam.make("sam", rho=0.5)
    _, _, out = run(est, problem, problem.params, batch, est.init(problem.params))
    clean_aux = problem.loss_fn(problem.params, batch)[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL), out.aux, clean_aux)
    if problem.has_state:  # a perturbed pass gives other batch statistics: make sure we can tell
        g = ref.Flat(problem.loss_fn, problem.params, batch)
        w_eps = g.w + ref.sam_eps(g.grad(g.w), 0.5)
        perturbed_aux = problem.loss_fn(g.unravel(w_eps), batch)[1]
        assert not np.allclose(flat(perturbed_aux), flat(clean_aux))


@pytest.mark.parametrize("method,eps_fn", [
    ("layersam", "layer"), ("sam", "adaptive"), ("looksam", "adaptive")])
def test_perturbation_variants(problem, method, eps_fn):
    batch = problem.batch()
    f = ref.Flat(problem.loss_fn, problem.params, batch)
    rho = 0.3
    if eps_fn == "layer":
        fn = lambda w, g: ref.layer_eps(f, w, g, rho)  # noqa: E731
        est = sam.make(method, rho=rho)
    else:
        fn = lambda w, g: ref.adaptive_eps(w, g, rho)  # noqa: E731
        est = sam.make(method, rho=rho, adaptive=True)
    _, g_s = ref.sam_grad(f, f.w, rho, eps_fn=fn)
    grads, _, _ = run(est, problem, problem.params, batch, est.init(problem.params), sam_step=True)
    np.testing.assert_allclose(flat(grads), g_s, RTOL, ATOL)


def test_layer_xi_per_leaf_by_hand():
    """xi_l = ||w_l|| / ||g_l||, and xi_l = 1 for a zero-norm leaf, worked out by hand.

    l_i = <a, x_i> + b c_i + 0.5 ||a - a0||^2 + 0.5 ||b||^2 at w = (a0, 0), a0 = (3, 4):
    g_a = (1, 0), g_b = (2,), ||g|| = sqrt(5); xi_a = 5 / 1, xi_b = 1 (||b|| = 0).
    At w + eps the gradient is g + eps, so the result reads eps back exactly.
    """
    a0 = jnp.array([3.0, 4.0])
    params = {"a": a0, "b": jnp.array([0.0])}

    def loss_fn(p, batch):
        quad = 0.5 * (jnp.sum((p["a"] - a0) ** 2) + jnp.sum(p["b"] ** 2))
        return batch["x"] @ p["a"] + p["b"][0] * batch["c"] + quad, ()

    batch = {"x": jnp.array([[1.0, 0.0], [1.0, 0.0]]), "c": jnp.array([2.0, 2.0])}
    rho = 0.1
    eps_a = rho * 5.0 * np.array([1.0, 0.0]) / np.sqrt(5.0)
    eps_b = rho * 1.0 * np.array([2.0]) / np.sqrt(5.0)
    est = sam.make("layersam", rho=rho)
    grads, _, _ = est.gradient(loss_fn, params, batch, est.init(params), sam_step=True)
    np.testing.assert_allclose(grads["a"], np.array([1.0, 0.0]) + eps_a, rtol=1e-6)
    np.testing.assert_allclose(grads["b"], np.array([2.0]) + eps_b, rtol=1e-6)


@pytest.mark.parametrize("method", ["looksam", "look_layersam"])
def test_looksam_over_two_periods(problem, method):
    """Steps 0..2k: SAM steps store g_v, reuse steps add alpha ||g||/||g_v|| g_v to fresh g."""
    k, rho, alpha, lr = 3, 0.2, 0.7, 0.1
    est = sam.make(method, rho=rho, k=k, alpha=alpha)
    params, state = problem.params, est.init(problem.params)
    f = ref.Flat(problem.loss_fn, problem.params, problem.batch(0))
    w, g_v = f.w, None
    for t in range(2 * k + 1):
        batch = problem.batch(seed=t)
        f.batch = batch
        g = f.grad(w)
        drift = (np.nan, np.nan)  # measured at SAM steps that have an earlier g_v
        if t % k == 0:
            eps = ref.sam_eps(g, rho) if method == "looksam" else ref.layer_eps(f, w, g, rho)
            expected = f.grad(w + eps)
            before, g_v = g_v, ref.projection(g, expected)
            if before is not None:
                drift = (np.dot(g_v, before) / np.linalg.norm(g_v) / np.linalg.norm(before),
                         np.linalg.norm(g_v - before) / np.linalg.norm(before))
        else:
            expected = ref.look_reuse(g, g_v, alpha)
        assert est.is_sam_step(t) == (t % k == 0)
        grads, state, out = run(est, problem, params, batch, state, sam_step=est.is_sam_step(t))
        np.testing.assert_allclose(flat(grads), expected, 1e-4, 1e-5, err_msg=f"step {t}")
        np.testing.assert_allclose(flat(state.g_v), g_v, 1e-4, 1e-5, err_msg=f"g_v at step {t}")
        assert float(out.metrics["sam_step"]) == float(t % k == 0)
        np.testing.assert_allclose([out.metrics["g_v_cos_prev"], out.metrics["g_v_change"]], drift,
                                   1e-4, 1e-6, err_msg=f"g_v drift at step {t}")
        w = w - lr * expected
        params = f.unravel(w)
    assert int(state.step) == 2 * k + 1


def test_sam_k_reuses_nothing(problem):
    k, rho = 2, 0.3
    est = sam.make("sam_k", rho=rho, k=k)
    state = est.init(problem.params)
    assert state.g_v is None
    f = ref.Flat(problem.loss_fn, problem.params, problem.batch(0))
    for t in range(4):
        f.batch = batch = problem.batch(t)
        expected = ref.sam_grad(f, f.w, rho)[1] if t % k == 0 else f.grad(f.w)
        grads, state, _ = run(est, problem, problem.params, batch, state, sam_step=est.is_sam_step(t))
        np.testing.assert_allclose(flat(grads), expected, RTOL, ATOL)


def sharpness_ordered_problem(n=10):
    """l_i = 0.5 c_i^2 (<x0, w> - 1)^2 with c_i a permutation of 1..n: perturbing along g raises
    every loss, by an amount ordered like c_i, so the sharpest examples are the largest c_i."""
    x0 = jnp.array([0.5, -1.0, 2.0])
    c = jnp.array([3.0, 9.0, 1.0, 7.0, 10.0, 2.0, 5.0, 8.0, 4.0, 6.0][:n])
    params = {"w1": jnp.array([0.2, 0.1]), "w2": jnp.array([-0.3])}

    def loss_fn(p, b):
        w = jnp.concatenate([p["w1"], p["w2"]])
        return 0.5 * b["c"] ** 2 * (jnp.dot(x0, w) - 1.0) ** 2, ()

    return loss_fn, params, {"c": c}


@pytest.mark.parametrize("gamma,expected_set", [(0.5, {1, 4, 7, 3, 9}), (0.3, {1, 4, 7}),
                                                (0.7, {1, 4, 7, 3, 9, 6, 8})])
def test_esam_selects_the_sharpest_examples(gamma, expected_set):
    loss_fn, params, batch = sharpness_ordered_problem()
    rho = 0.05
    f = ref.Flat(loss_fn, params, batch)
    g_s, selected = ref.esam_grad(f, f.w, rho, beta=1.0, gamma=gamma, leaf_mask=[1, 1])
    assert set(selected.tolist()) == expected_set  # the ordering is known: largest c_i
    est = sam.make("esam", rho=rho, beta=1.0, gamma=gamma)
    grads, _, out = est.gradient(loss_fn, params, batch, est.init(params))
    np.testing.assert_allclose(flat(grads), g_s, RTOL, ATOL)
    np.testing.assert_allclose(out.metrics["selected_fraction"], len(expected_set) / 10)
    assert float(out.metrics["sharpness"]) > 0


def test_esam_with_a_fixed_mask(problem):
    """SWP: eps = (rho / beta) mask*g / ||mask*g||, with the mask this step's key draws."""
    batch = problem.batch(n=16)
    f = ref.Flat(problem.loss_fn, problem.params, batch)
    rho, beta, gamma = 0.3, 0.5, 0.5
    key = jax.random.key(7)
    mask = jax.tree.leaves(esam_lib.swp_mask(key, problem.params, beta))
    bits = [bool(b) for b in mask]
    assert 0 < sum(bits) < len(bits)  # this key keeps some leaves and drops others
    g_s, _ = ref.esam_grad(f, f.w, rho, beta, gamma, leaf_mask=bits)
    est = sam.make("esam", rho=rho, beta=beta, gamma=gamma)
    grads, _, _ = run(est, problem, problem.params, batch, est.init(problem.params), key)
    np.testing.assert_allclose(flat(grads), g_s, RTOL, ATOL)


def test_swp_mask_is_bernoulli_beta_per_leaf():
    params = {f"l{i}": jnp.zeros((i + 1,)) for i in range(40)}
    keeps = [np.mean([bool(b) for b in jax.tree.leaves(esam_lib.swp_mask(jax.random.key(s),
                                                                           params, 0.6))])
             for s in range(50)]
    assert abs(np.mean(keeps) - 0.6) < 0.05  # 2000 draws: std of the mean is about 0.011
    assert np.std(keeps) > 0  # each key draws its own mask


def test_esam_all_leaves_dropped_gives_the_clean_gradient(mlp):
    """Every leaf dropped: eps = 0, so g_s = grad of the selected subset at w."""
    batch = mlp.batch()
    key = next(jax.random.key(s) for s in range(1000)
               if not any(bool(b) for b in jax.tree.leaves(
                   esam_lib.swp_mask(jax.random.key(s), mlp.params, 0.3))))
    est = sam.make("esam", rho=0.5, beta=0.3, gamma=1.0)
    grads, _, _ = est.gradient(mlp.loss_fn, mlp.params, batch, est.init(mlp.params), key)
    f = ref.Flat(mlp.loss_fn, mlp.params, batch)
    np.testing.assert_allclose(flat(grads), f.grad(f.w), RTOL, ATOL)


def test_m_sharpness_per_group_perturbation(problem):
    """g_s = mean_j grad L_j(w + eps_j), eps_j from each group's own gradient."""
    n, m, rho = 12, 4, 0.3
    batch = problem.batch(n=n)
    f = ref.Flat(problem.loss_fn, problem.params, batch)
    parts = []
    for j in range(n // m):
        group = jax.tree.map(lambda x: x[j * m:(j + 1) * m], batch)  # noqa: B023
        parts.append(ref.sam_grad(f, f.w, rho, batch=group)[1])
    est = sam.make("sam", rho=rho, m=m)
    grads, _, _ = run(est, problem, problem.params, batch, est.init(problem.params))
    np.testing.assert_allclose(flat(grads), np.mean(parts, axis=0), RTOL, ATOL)


def test_m_sharpness_keeps_the_full_batch_g_for_the_projection(mlp):
    n, m, rho = 12, 3, 0.3
    batch = mlp.batch(n=n)
    f = ref.Flat(mlp.loss_fn, mlp.params, batch)
    g_s = np.mean([ref.sam_grad(f, f.w, rho, batch=jax.tree.map(
        lambda x: x[j * m:(j + 1) * m], batch))[1] for j in range(n // m)], axis=0)  # noqa: B023
    est = sam.make("looksam", rho=rho, k=2, m=m)
    _, state, _ = run(est, mlp, mlp.params, batch, est.init(mlp.params), sam_step=True)
    np.testing.assert_allclose(flat(state.g_v), ref.projection(f.grad(f.w), g_s), 1e-4, 1e-5)


def test_gradient_drift_diagnostic_of_figure2(mlp):
    """Every 2nd step: ||x_t - x_{t-2}|| for g_s, g_h = g_s - g_v and g_v, from the reference."""
    rho, lr, interval = 0.3, 0.2, 2
    est = sam.make("sam", rho=rho, drift_interval=interval)
    params, state = mlp.params, est.init(mlp.params)
    f = ref.Flat(mlp.loss_fn, mlp.params, mlp.batch(0))
    w, snapshots = f.w, {}
    for t in range(5):
        f.batch = batch = mlp.batch(seed=t)
        g, g_s = ref.sam_grad(f, w, rho)
        g_v = ref.projection(g, g_s)
        snapshots[t] = (g_s, g_s - g_v, g_v)
        grads, state, out = run(est, mlp, params, batch, state)
        for i, name in enumerate(("g_s", "g_h", "g_v")):
            got = float(out.metrics[f"grad_change_{name}"])
            if t % interval == 0 and t >= interval:
                want = np.linalg.norm(snapshots[t][i] - snapshots[t - interval][i])
                np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=f"{name} at step {t}")
            else:
                assert np.isnan(got), (name, t)
        w = w - lr * g_s
        params = f.unravel(w)


def test_gradient_drift_needs_a_method_perturbing_every_step():
    with pytest.raises(ValueError, match="drift_interval"):
        sam.make("looksam", drift_interval=5)


def test_esam_subset_losses_of_figure5():
    """Mean losses of the selected (B+) and rejected (B-) examples at w and at w + eps."""
    loss_fn, params, batch = sharpness_ordered_problem()
    rho = 0.05
    f = ref.Flat(loss_fn, params, batch)
    selected = [1, 3, 4, 7, 9]  # the largest c_i (see test_esam_selects_the_sharpest_examples)
    rejected = [0, 2, 5, 6, 8]
    w_eps = f.w + ref.sam_eps(f.grad(f.w), rho)
    clean, perturbed = np.asarray(f.losses(f.w)), np.asarray(f.losses(w_eps))
    est = sam.make("esam", rho=rho, beta=1.0, gamma=0.5)
    _, _, out = est.gradient(loss_fn, params, batch, est.init(params))
    m = out.metrics
    np.testing.assert_allclose(m["esam_loss_selected_empirical"], clean[selected].mean(), rtol=1e-5)
    np.testing.assert_allclose(m["esam_loss_rejected_empirical"], clean[rejected].mean(), rtol=1e-5)
    np.testing.assert_allclose(m["esam_loss_selected_sam"], perturbed[selected].mean(), rtol=1e-5)
    np.testing.assert_allclose(m["esam_loss_rejected_sam"], perturbed[rejected].mean(), rtol=1e-5)
