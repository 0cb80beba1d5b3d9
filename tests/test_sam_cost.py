"""Compiled cost: the reuse step is a plain step, the SAM step two (XLA's own FLOP count)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from looksam import sam


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (16, 32):
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def compiled_flops():
    model = ConvNet()
    params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    batch = {"x": jnp.ones((8, 16, 16, 3)), "y": jnp.zeros((8,), jnp.int32)}

    def loss_fn(p, b):
        logits = model.apply({"params": p}, b["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]), ()

    def flops(est, sam_step):
        fn = jax.jit(lambda p, b, s, r: est.gradient(loss_fn, p, b, s, r, sam_step=sam_step))
        compiled = fn.lower(params, batch, est.init(params), jax.random.key(0)).compile()
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        return analysis["flops"]

    return flops


@pytest.mark.parametrize("method", ["sam_k", "looksam", "look_layersam"])
def test_reuse_step_costs_a_plain_step(compiled_flops, method):
    base = compiled_flops(sam.make("none"), False)
    reuse = compiled_flops(sam.make(method, k=5), False)
    assert reuse / base == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("method", ["sam", "sam_k", "looksam", "layersam", "look_layersam"])
def test_sam_step_costs_two_plain_steps(compiled_flops, method):
    base = compiled_flops(sam.make("none"), False)
    step = compiled_flops(sam.make(method), True)
    assert step / base == pytest.approx(2.0, rel=0.05)


def test_esam_sds_costs_less_than_sam(compiled_flops):
    base = compiled_flops(sam.make("none"), False)
    esam = compiled_flops(sam.make("esam", beta=0.6, gamma=0.5), True)
    # ideal 1 + 1/3 + gamma: a forward pass and a half-size forward+backward on top of the clean one
    assert 1.6 < esam / base < 1.95
