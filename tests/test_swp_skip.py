"""sam.swp_skip: SWP's dropped kernels get no weight gradient in the clean backward (looksam/sam/
swp_skip.py), and the step's gradient, loss and BatchNorm statistics equal the masked default's."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from looksam import models, sam, train
from looksam.sam import esam, swp_skip


class TwoConvs(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.Conv(4, (3, 3), name="second")(x)
        return nn.Dense(3)(x.mean((1, 2)))


def _convolutions(jaxpr) -> int:
    return sum(e.primitive.name == "conv_general_dilated" for e in jaxpr.eqns)


def test_dropped_kernels_get_no_gradient_and_no_filter_convolution():
    model = TwoConvs()
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    params = model.init(jax.random.key(1), x)["params"]
    mask = jax.tree.map(lambda _: jnp.array(False), params)
    mask["second"]["kernel"] = jnp.array(True)

    def grad(p, mask):
        with swp_skip.skipping(mask):
            return jax.grad(lambda q: model.apply({"params": q}, x).sum())(p)

    skipped = jax.jit(grad)(params, mask)
    full = jax.grad(lambda q: model.apply({"params": q}, x).sum())(params)
    # Dropped kernels: exactly zero (no gradient formed); biases and kept kernels: unchanged.
    assert not np.any(skipped["Conv_0"]["kernel"]) and not np.any(skipped["Dense_0"]["kernel"])
    assert np.any(full["Conv_0"]["kernel"]) and np.any(full["Dense_0"]["kernel"])
    for path in (("second", "kernel"), ("second", "bias"), ("Conv_0", "bias"), ("Dense_0", "bias")):
        np.testing.assert_allclose(skipped[path[0]][path[1]], full[path[0]][path[1]], rtol=1e-6)
    # The backward's cond for the second convolution: the dropped branch forms the input's
    # cotangent only (1 convolution), the kept one the kernel's too (2); the first convolution's
    # input needs no cotangent (0 and 1).
    conds = [e for e in jax.make_jaxpr(grad)(params, mask).jaxpr.eqns if e.primitive.name == "cond"]
    counts = [[_convolutions(b.jaxpr) for b in e.params["branches"]] for e in conds]
    assert [1, 2] in counts and [0, 1] in counts
    # The interceptor is gone outside the context.
    again = jax.grad(lambda q: model.apply({"params": q}, x).sum())(params)
    np.testing.assert_allclose(ravel_pytree(again)[0], ravel_pytree(full)[0])


MODELS = {
    "resnet18": dict(width=4),
    "vit_s16": dict(patch_size=4, image_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32),
}


@pytest.mark.parametrize("name,gamma", [("resnet18", 0.5),  # ESAM
                                        pytest.param("vit_s16", 1.0, marks=pytest.mark.slow)])  # SWP alone
def test_swp_skip_gives_the_masked_step(name, gamma):
    """Several masks (keys): the update direction, the loss and the BatchNorm statistics of a step
    with the skip equal the default's, which computes every gradient and zeroes the dropped.
    In float64: in float32 the cond's different fusions move the ResNet's gradient by up to 3e-5
    of its norm (train-mode BatchNorm at batch 8 amplifies rounding), which would hide a small
    real difference; in float64 the two agree to 1e-14."""
    with jax.enable_x64(True):
        model = models.create(name, num_classes=4, dtype=jnp.float64, **MODELS[name])
        images = jax.random.normal(jax.random.key(0), (8, 8, 8, 3), jnp.float64)
        batch = {"image": images, "label": jax.random.randint(jax.random.key(1), (8,), 0, 4)}
        variables = jax.tree.map(lambda v: v.astype(jnp.float64),
                                 model.init(jax.random.key(2), images[:2], train=False))
        loss_fn = train.make_loss_fn(model, variables.get("batch_stats"), jax.random.key(3))
        params = variables["params"]
        n_leaves = len(jax.tree.leaves(params))
        estimators = [sam.make("esam", beta=0.6, gamma=gamma, swp_skip=skip) for skip in (False, True)]
        steps = [jax.jit(lambda p, b, key, e=e: e.gradient(loss_fn, p, b, e.init(p), key, sam_step=True))
                 for e in estimators]
        dropped_some = 0
        for seed in range(3):
            key = jax.random.key(10 + seed)
            kept = sum(map(bool, jax.tree.leaves(esam.swp_mask(key, params, 0.6))))
            dropped_some += kept < n_leaves
            (g0, _, out0), (g1, _, out1) = (step(params, batch, key) for step in steps)
            a, b = ravel_pytree(g1)[0], ravel_pytree(g0)[0]
            assert a.dtype == np.float64 and np.linalg.norm(a - b) <= 1e-12 * np.linalg.norm(b)
            np.testing.assert_allclose(out1.metrics["loss"], out0.metrics["loss"], rtol=1e-12)
            np.testing.assert_allclose(ravel_pytree(out1.aux)[0], ravel_pytree(out0.aux)[0], rtol=1e-12,
                                       atol=1e-14)
        assert dropped_some >= 2  # the masks do drop tensors


def test_swp_skip_is_a_checked_esam_setting():
    assert sam.make("esam", swp_skip=True).swp_skip
    with pytest.raises(ValueError, match="swp_skip must be True or False"):
        sam.make("esam", swp_skip="yes")
    with pytest.raises(ValueError, match="unexpected.*swp_skip"):
        sam.make("sam", swp_skip=True)
