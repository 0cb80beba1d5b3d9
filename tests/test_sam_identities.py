"""Identities between methods, microbatching, the in-graph schedule and bad hyper-parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu
import pytest
from jax.flatten_util import ravel_pytree

from looksam import sam

from conftest import bn_problem

RTOL, ATOL = 2e-5, 2e-6


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def grads_of(est, problem, batch, sam_step=None, state=None, rng=None, params=None):
    params = problem.params if params is None else params
    state = est.init(params) if state is None else state
    fn = jax.jit(lambda p, b, s, r: est.gradient(problem.loss_fn, p, b, s, r, sam_step=sam_step))
    return fn(params, batch, state, jax.random.key(3) if rng is None else rng)


def assert_same(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(flat(a), flat(b), rtol, atol)


def test_looksam_k1_is_sam(problem):
    batch = problem.batch()
    look = sam.make("looksam", rho=0.2, k=1, alpha=0.7)
    state = look.init(problem.params)
    for t in range(3):
        assert look.is_sam_step(t)
        g_look, state, _ = grads_of(look, problem, problem.batch(t), state=state)
        g_sam, _, _ = grads_of(sam.make("sam", rho=0.2), problem, problem.batch(t))
        assert_same(g_look, g_sam)
    del batch


def test_alpha0_reuse_steps_are_none(problem):
    est = sam.make("looksam", rho=0.2, k=3, alpha=0.0)
    _, state, _ = grads_of(est, problem, problem.batch(0), sam_step=True)
    g_reuse, _, _ = grads_of(est, problem, problem.batch(1), sam_step=False, state=state)
    g_none, _, _ = grads_of(sam.make("none"), problem, problem.batch(1))
    assert_same(g_reuse, g_none)


def test_esam_beta_gamma_1_is_sam(problem):
    batch = problem.batch()
    g_esam, _, _ = grads_of(sam.make("esam", rho=0.3, beta=1.0, gamma=1.0), problem, batch)
    g_sam, _, _ = grads_of(sam.make("sam", rho=0.3), problem, batch)
    assert_same(g_esam, g_sam)


@pytest.mark.parametrize("method", ["sam", "sam_k", "looksam", "layersam", "look_layersam",
                                    "esam"])
def test_rho0_is_none(problem, method):
    batch = problem.batch()
    hp = dict(rho=0.0)
    if method == "esam":
        hp.update(beta=1.0, gamma=1.0)  # SDS with rho = 0 has no sharpness to select on
    g, _, _ = grads_of(sam.make(method, **hp), problem, batch, sam_step=True)
    g_none, _, _ = grads_of(sam.make("none"), problem, batch)
    assert_same(g, g_none)


@pytest.mark.parametrize("method", ["sam", "looksam", "layersam", "esam"])
def test_m_equal_n_is_no_m(problem, method):
    batch = problem.batch(n=12)
    g_m, _, out_m = grads_of(sam.make(method, rho=0.3, m=12), problem, batch, sam_step=True)
    g, _, out = grads_of(sam.make(method, rho=0.3), problem, batch, sam_step=True)
    assert_same(g_m, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL), out_m.aux, out.aux)


ALL = [("none", {}), ("sam", dict(rho=0.3)), ("sam_k", dict(rho=0.3, k=2)),
       ("looksam", dict(rho=0.3, k=2)), ("layersam", dict(rho=0.3)),
       ("look_layersam", dict(rho=0.3, k=2)), ("esam", dict(rho=0.3, beta=0.5, gamma=0.5)),
       ("esam", dict(rho=0.3, beta=1.0, gamma=0.3)), ("sam", dict(rho=0.3, m=4)),
       ("esam", dict(rho=0.3, beta=0.5, gamma=0.5, m=4)), ("looksam", dict(rho=0.3, adaptive=True))]


@pytest.mark.parametrize("method,hp", ALL, ids=[f"{m}-{i}" for i, (m, _) in enumerate(ALL)])
def test_microbatched_equals_unbatched(mlp, method, hp):
    """Two steps (a SAM step, then a reuse step where the method has one) at microbatch 4 of 16."""
    whole, micro = sam.make(method, **hp), sam.make(method, microbatch=8 if "m" in hp else 4, **hp)
    s_whole, s_micro = whole.init(mlp.params), micro.init(mlp.params)
    for t in range(2):
        batch = mlp.batch(seed=t, n=16)
        g1, s_whole, out1 = grads_of(whole, mlp, batch, state=s_whole, rng=jax.random.key(t))
        g2, s_micro, out2 = grads_of(micro, mlp, batch, state=s_micro, rng=jax.random.key(t))
        assert_same(g1, g2, 1e-4, 1e-6)
        for name in out1.metrics:
            np.testing.assert_allclose(out1.metrics[name], out2.metrics[name], 1e-4, 1e-6,
                                       err_msg=name)


def test_microbatched_batchnorm_aux_is_the_mean_of_microbatch_statistics():
    """Chunks interleave the batch (chunk j = examples j, j + c, ...), so that a batch sharded over
    devices keeps every chunk on all of them: at microbatch 4 of 8, chunks are x[0::2], x[1::2]."""
    problem = bn_problem()
    batch = problem.batch(n=8)
    _, _, out = grads_of(sam.make("sam", rho=0.1, microbatch=4), problem, batch)
    halves = [problem.loss_fn(problem.params, jax.tree.map(lambda x: x[j::2], batch))[1]  # noqa: B023
              for j in (0, 1)]
    expected = jax.tree.map(lambda a, b: (a + b) / 2, *halves)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL), out.aux, expected)


def test_g_v_is_orthogonal_to_g(problem):
    est = sam.make("looksam", rho=0.5, k=5)
    batch = problem.batch()
    _, state, _ = grads_of(est, problem, batch, sam_step=True)
    g, _, _ = grads_of(sam.make("none"), problem, batch)
    cos = otu.tree_vdot(g, state.g_v) / (otu.tree_norm(g) * otu.tree_norm(state.g_v))
    assert float(otu.tree_norm(state.g_v)) > 0
    assert abs(float(cos)) < 1e-4


@pytest.mark.parametrize("method,adaptive", [
    (m, a) for m in ("sam", "sam_k", "looksam", "layersam", "look_layersam", "esam")
    for a in (False, True) if not (a and "layersam" in m)])  # xi and adaptive do not combine
def test_zero_gradient_gives_finite_results(method, adaptive):
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    loss_fn = lambda p, b: (jnp.zeros(b["x"].shape[0]) * p["b"], ())  # noqa: E731
    batch = {"x": jnp.ones((4, 3))}
    est = sam.make(method, adaptive=adaptive) if method != "esam" else sam.make(
        method, adaptive=adaptive, gamma=0.5)
    state = est.init(params)
    for t in range(3):
        grads, state, out = est.gradient(loss_fn, params, batch, state, jax.random.key(t))
        # g_v's drift is NaN ("not measured") until there is an earlier, non-zero g_v.
        measured = {k: v for k, v in out.metrics.items() if k not in ("g_v_cos_prev", "g_v_change")}
        assert all(np.isfinite(x).all() for x in jax.tree.leaves((grads, state, measured)))
        assert float(otu.tree_norm(grads)) == 0.0


@pytest.mark.parametrize("method", ["sam_k", "looksam", "look_layersam"])
@pytest.mark.parametrize("in_graph", ["auto", "cond", "select"])
def test_in_graph_schedule_equals_host_dispatch(problem, method, in_graph):
    est = sam.make(method, rho=0.3, k=3, in_graph=in_graph)
    host = jax.jit(lambda p, b, s, flag: est.gradient(problem.loss_fn, p, b, s, sam_step=flag),
                   static_argnums=3)
    graph = jax.jit(lambda p, b, s: est.gradient(problem.loss_fn, p, b, s))
    s_host = s_graph = est.init(problem.params)
    for t in range(7):
        batch = problem.batch(seed=t)
        g1, s_host, o1 = host(problem.params, batch, s_host, est.is_sam_step(t))
        g2, s_graph, o2 = graph(problem.params, batch, s_graph)
        assert_same(g1, g2, 0, 0)
        assert_same(s_host, s_graph, 0, 0)
        assert set(o1.metrics) == set(o2.metrics)
        assert float(o2.metrics["sam_step"]) == float(t % 3 == 0)


def test_schedule_and_cost():
    assert [sam.make("looksam", k=5).is_sam_step(t) for t in range(6)] == [
        True, False, False, False, False, True]
    assert not sam.make("none").is_sam_step(0)
    assert all(sam.make("esam").is_sam_step(t) for t in range(3))
    assert sam.make("sam").ideal_cost == 2.0
    assert sam.make("looksam", k=5).ideal_cost == pytest.approx(1.2)
    assert sam.make("sam_k", k=10).ideal_cost == pytest.approx(1.1)
    assert sam.make("esam", gamma=0.5).ideal_cost == pytest.approx(1 + 1 / 3 + 0.5)
    assert sam.make("esam", beta=0.6, gamma=1.0).ideal_cost == 2.0
    assert sam.make("none").ideal_cost == 1.0


@pytest.mark.parametrize("method,hp,words", [
    ("looksam", dict(k=0), "k=0"), ("sam_k", dict(k=2.5), "k=2.5"),
    ("sam", dict(rho=-0.1), "rho"), ("looksam", dict(alpha=-1.0), "alpha"),
    ("esam", dict(beta=0.0), "0 < beta <= 1"), ("esam", dict(beta=1.5), "beta"),
    ("esam", dict(gamma=0.0), "gamma"), ("esam", dict(gamma=1.01), "gamma"),
    ("lookasm", {}, "unknown sharpness-aware method"), ("sam", dict(k=5), "unexpected ['k']"),
    ("sam", dict(m=0), "m=0"), ("layersam", dict(adaptive=True), "adaptive"),
    ("sam", dict(m=4, microbatch=6), "multiple of m"), ("sam", dict(rho=float("nan")), "rho"),
    ("looksam", dict(in_graph="while"), "in_graph"),
])
def test_bad_hyper_parameters_are_rejected(method, hp, words):
    with pytest.raises(ValueError, match=None) as info:
        sam.make(method, **hp)
    assert words in str(info.value)


def test_m_must_divide_the_batch(mlp):
    with pytest.raises(ValueError, match="m=5 must divide the per-step batch of 12"):
        grads_of(sam.make("sam", m=5), mlp, mlp.batch(n=12))
    with pytest.raises(ValueError, match="microbatch=5 must divide"):
        grads_of(sam.make("sam", microbatch=5), mlp, mlp.batch(n=12))


def test_estimator_is_hashable_and_static():
    assert hash(sam.make("looksam", k=5)) == hash(sam.make("looksam", k=5))
    assert sam.make("looksam", k=5) != sam.make("looksam", k=6)
