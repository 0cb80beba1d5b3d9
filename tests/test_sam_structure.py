"""A method resolved into its parts (`Estimator.parts`), and the figure diagnostics as pure functions.

The expectations are written out by hand from docs/sharpness-aware.md's method table, not derived
from the estimator's own tables.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from looksam import sam
from looksam.sam import diagnostics

# (method, hparams) -> (period, reuses_g_v, perturbation, swp, sds, reports_selection)
EXPECTED = [
    ("none", {}, (1, False, "none", False, False, False)),
    ("sam", {}, (1, False, "sam", False, False, False)),
    ("sam", dict(adaptive=True), (1, False, "adaptive", False, False, False)),
    ("sam_k", dict(k=10), (10, False, "sam", False, False, False)),
    ("sam_k", dict(k=1), (1, False, "sam", False, False, False)),
    ("looksam", dict(k=5), (5, True, "sam", False, False, False)),
    ("looksam", dict(k=3, adaptive=True), (3, True, "adaptive", False, False, False)),
    ("layersam", {}, (1, False, "layer", False, False, False)),
    ("look_layersam", dict(k=4), (4, True, "layer", False, False, False)),
    ("esam", dict(beta=0.6, gamma=0.5), (1, False, "sam", True, True, True)),
    ("esam", dict(beta=1.0, gamma=0.5), (1, False, "sam", False, True, True)),
    ("esam", dict(beta=0.6, gamma=1.0), (1, False, "sam", True, False, True)),
    ("esam", dict(beta=1.0, gamma=1.0), (1, False, "sam", False, False, True)),
    ("esam", dict(adaptive=True), (1, False, "adaptive", True, True, True)),
]


@pytest.mark.parametrize("method,hparams,expected", EXPECTED)
def test_each_method_resolves_into_its_parts(method, hparams, expected):
    est = sam.make(method, **hparams)
    p = est.parts
    assert (p.period, p.reuses_g_v, p.perturbation, p.swp, p.sds, p.reports_selection) == expected
    assert est.period == expected[0]
    assert est.perturbs == (expected[2] != "none")


def test_k_only_sets_the_period_of_a_periodic_method():
    # Estimator's k defaults to 5 for every method; only sam_k / looksam / look_layersam use it.
    for method in ("sam", "layersam", "esam"):
        assert sam.Estimator(method, k=7).parts.period == 1
    assert sam.Estimator("looksam", k=7).parts.period == 7


def test_replace_re_resolves_the_parts():
    est = sam.make("esam", beta=0.6, gamma=0.5)
    assert not dataclasses.replace(est, gamma=1.0).parts.sds
    assert not dataclasses.replace(est, beta=1.0).parts.swp
    assert dataclasses.replace(est, batch_sharding=None).parts == est.parts
    assert dataclasses.replace(sam.make("looksam", k=5), k=9).period == 9


def test_parts_are_derived_not_compared_or_shown():
    a, b = sam.make("looksam", k=5), sam.make("looksam", k=5)
    assert a == b and hash(a) == hash(b)
    assert "parts" not in repr(a)
    with pytest.raises(TypeError):
        sam.Estimator("sam", parts=None)  # not a constructor argument


def test_unknown_method_is_rejected_by_make_and_by_the_constructor():
    for build in (sam.make, sam.Estimator):
        with pytest.raises(ValueError, match="unknown sharpness-aware method 'gsam'"):
            build("gsam")


# ---- a tiny quadratic: l_i(w) = ||w - c_i||^2 / 2, so grad L_S(w) = w - mean_{i in S} c_i -------
C = jnp.array([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0], [3.0, 1.0, 0.0], [-2.0, 0.5, 1.0],
               [0.5, 0.5, -1.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [-1.0, -1.0, -1.0]])
W = {"w": jnp.array([0.3, -0.2, 0.5])}


def quadratic_loss(params, batch):
    return 0.5 * jnp.sum((params["w"] - batch["c"]) ** 2, axis=-1), None


def test_esam_with_beta_and_gamma_1_is_sam_in_closed_form():
    rho = 0.4
    g = np.asarray(W["w"] - C.mean(0))
    g_s_expected = g + rho * g / np.linalg.norm(g)  # grad L(w + eps) = (w + eps) - mean c
    outs = {}
    for method, hp in (("sam", dict(rho=rho)), ("esam", dict(rho=rho, beta=1.0, gamma=1.0))):
        est = sam.make(method, **hp)
        grads, _, out = est.gradient(quadratic_loss, W, {"c": C}, est.init(W), jax.random.key(0),
                                     sam_step=True)
        np.testing.assert_allclose(grads["w"], g_s_expected, rtol=1e-5, atol=1e-6)
        outs[method] = (grads, out.metrics)
    np.testing.assert_array_equal(outs["sam"][0]["w"], outs["esam"][0]["w"])
    assert set(outs["esam"][1]) == set(outs["sam"][1]) | {"selected_fraction", "sharpness"}


def test_subset_losses_is_figure5_by_hand():
    losses = jnp.array([1.0, 2.0, 3.0, 4.0])
    sharpness = jnp.array([0.5, -0.5, 1.5, 0.0])
    selected = jnp.array([True, False, True, False])
    m = diagnostics.subset_losses(losses, sharpness, selected)
    assert list(m) == ["esam_loss_selected_empirical", "esam_loss_selected_sam",
                       "esam_loss_rejected_empirical", "esam_loss_rejected_sam"]
    np.testing.assert_allclose([m[k] for k in m], [2.0, 3.0, 3.0, 2.75])
    empty = diagnostics.subset_losses(losses, sharpness, jnp.ones(4, bool))
    assert float(empty["esam_loss_rejected_empirical"]) == 0.0  # an empty B- gives 0, not NaN


def test_subset_cosines_is_figure6_by_hand():
    eps = jnp.array([0.1, -0.3, 0.2])
    perturbed = {"w": W["w"] + eps}
    chosen = jnp.array([2, 5, 0])
    selected = jnp.zeros(8, bool).at[chosen].set(True)
    rejected = np.flatnonzero(~np.asarray(selected))

    def grad_at(w, idx):  # grad of the mean quadratic loss over the examples idx, at w
        return w - C[np.asarray(idx)].mean(0)

    def subset_grad(at, idx):
        return {"w": grad_at(at["w"], idx)}

    g = subset_grad(W, np.arange(8))
    g_s = subset_grad(perturbed, chosen)
    m = diagnostics.subset_cosines(subset_grad, W, perturbed, chosen, selected, g, g_s, gamma=0.375)

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    full_sam, full = grad_at(perturbed["w"], np.arange(8)), grad_at(W["w"], np.arange(8))
    want = {"esam_cos_selected_sam": cos(grad_at(perturbed["w"], chosen), full_sam),
            "esam_cos_rejected_sam": cos(grad_at(perturbed["w"], rejected), full_sam),
            "esam_cos_selected_empirical": cos(grad_at(W["w"], chosen), full),
            "esam_cos_rejected_empirical": cos(grad_at(W["w"], rejected), full)}
    assert set(m) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(m[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_subset_cosines_needs_a_rejected_example():
    everything = jnp.arange(4)
    with pytest.raises(ValueError, match="non-empty B-: gamma=1.0 selects all 4"):
        diagnostics.subset_cosines(None, W, W, everything, jnp.ones(4, bool), W, W, gamma=1.0)
