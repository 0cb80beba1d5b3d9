"""Microbatching on a convolutional net (the unrolled CPU path) and at a paper-size batch."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from looksam import sam


class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(5)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("method,hp", [
    ("none", {}), ("sam", {}), ("sam_k", dict(k=2)), ("looksam", dict(k=2)), ("layersam", {}),
    ("look_layersam", dict(k=2)), ("esam", dict(beta=0.6, gamma=0.5)), ("sam", dict(m=8))])
def test_conv_microbatched_equals_unbatched(method, hp):
    model = Conv()
    params = model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))["params"]
    kx, ky = jax.random.split(jax.random.key(1))
    batch = {"x": jax.random.normal(kx, (32, 12, 12, 3)), "y": jax.random.randint(ky, (32,), 0, 5)}

    def loss_fn(p, b):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, b["x"]),
                                                               b["y"]), ()

    results = []
    for microbatch in (None, 8):
        est = sam.make(method, microbatch=microbatch, **hp)
        step = est.is_sam_step(0)
        fn = jax.jit(lambda p, s, r, est=est, step=step: est.gradient(loss_fn, p, batch, s, r,
                                                                      sam_step=step))
        results.append(ravel_pytree(fn(params, est.init(params), jax.random.key(2))[0])[0])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method,hp", [("looksam", dict(k=5)), ("esam", dict(beta=0.6, gamma=0.5)),
                                       ("look_layersam", dict(k=5, m=128))])
def test_paper_batch_4096_in_16_microbatches(mlp, method, hp):
    """A 4k batch (LookSAM Table 4's smallest) accumulated 256 examples at a time; SDS picks its
    global top 2048 of 4096 across all 16 chunks."""
    batch = mlp.batch(seed=3, n=4096)
    grads = []
    for microbatch in (None, 256):
        est = sam.make(method, rho=0.5, microbatch=microbatch, **hp)
        fn = jax.jit(lambda p, s, r, est=est: est.gradient(mlp.loss_fn, p, batch, s, r, sam_step=True))
        grads.append(ravel_pytree(fn(mlp.params, est.init(mlp.params), jax.random.key(4))[0])[0])
    np.testing.assert_allclose(grads[1], grads[0], rtol=2e-4, atol=1e-6)
