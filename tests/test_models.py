"""The model registry: paper-size parameter counts, and small-size forward/backward, BatchNorm, bf16."""

from __future__ import annotations

from functools import partial

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from looksam import models

# name: (input size, exact count with the paper's classes, published count). The exact counts are
# the reference implementations' (kuangliu/pytorch-cifar, the WRN and PyramidNet PyTorch code,
# torchvision, timm's ViTs); the published ones are the papers' roundings.
PAPER = {
    "resnet18": (32, 11_173_962, 11.17e6),
    "resnet50": (32, 23_520_842, 23.52e6),
    "wrn28_10": (32, 36_479_194, 36.5e6),
    # Han et al.'s table gives 28.3M for both additive alpha=270 and multiplicative alpha=27; the
    # additive net has 28.49M (its convolutions alone 28.43M), the multiplicative one ~28.3M.
    "pyramidnet110": (32, 28_485_477, 28.3e6),
    "vit_s16": (224, 22_050_664, 22e6),
    "vit_s32": (224, 22_878_952, 23e6),
    "vit_b16": (224, 86_567_656, 87e6),
    "vit_b32": (224, 88_224_232, 88e6),
    "resnet50_imagenet": (224, 25_557_032, 25.56e6),
    "resnet101_imagenet": (224, 44_549_160, 44.55e6),
}

# Shrunk to compile and run in a second or two each on CPU, still with every kind of block: two
# stages or more, so that there is a downsampling block and a projection or zero-padded shortcut.
SMALL = {
    "cnn": dict(widths=(8, 16)),
    "resnet18": dict(width=8, stage_sizes=(1, 1)),
    "resnet50": dict(width=4, stage_sizes=(1, 1)),
    "wrn28_10": dict(depth=10, widen_factor=2),
    "pyramidnet110": dict(depth=8, alpha=6),
    "vit_s16": dict(hidden_size=32, num_layers=2, num_heads=2, patch_size=4, image_size=16),
    "vit_s32": dict(hidden_size=32, num_layers=1, num_heads=4, patch_size=8, image_size=16),
    "vit_b16": dict(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=24, patch_size=4, image_size=16),
    "vit_b32": dict(hidden_size=16, num_layers=1, num_heads=1, patch_size=16, image_size=16),
    "resnet50_imagenet": dict(width=4, stage_sizes=(1, 1)),
    "resnet101_imagenet": dict(width=4, stage_sizes=(1, 2)),
}
CLASSES = 5


def count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def abstract_init(model, size):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))


def test_every_model_is_covered():
    assert set(PAPER) | {"cnn"} == set(models.MODELS) == set(SMALL)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_parameter_count(name):
    size, exact, published = PAPER[name]
    n = count(abstract_init(models.create(name), size)["params"])
    assert n == exact
    assert abs(n - published) <= 0.01 * published


def test_overrides():
    head = abstract_init(models.create("resnet18", num_classes=100), 32)["params"]["Dense_0"]["kernel"]
    assert head.shape == (512, 100)
    assert count(abstract_init(models.create("resnet18", width=16), 32)["params"]) < 1e6
    # ViT-S/4 on 32x32: 64 patches + the class token.
    vit = abstract_init(models.create("vit_s16", patch_size=4, image_size=32), 32)["params"]
    assert vit["pos_embedding"].shape == (1, 65, 384)


def test_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        models.create("resnet19")
    with pytest.raises(ValueError, match="no field widht"):
        models.create("resnet18", widht=16)
    vit = models.create("vit_s16", patch_size=4, image_size=32)
    with pytest.raises(ValueError, match="image_size=32"):
        jax.eval_shape(vit.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def key(seed):
    # Threefry init programs take seconds each to compile on CPU; rbg ones a fraction of that.
    return jax.random.key(seed, impl="rbg")


def small(name, **kw):
    """A small model, a batch of 3, and variables with noise on every weight, so that the
    zero-initialized ViT head lets logits and gradients depend on the body."""
    model = models.create(name, num_classes=CLASSES, **SMALL[name], **kw)
    size = SMALL[name].get("image_size", 16)
    x = jax.random.normal(jax.random.key(1), (3, size, size, 3))
    variables = jax.jit(model.init)(key(0), x)
    flat, unravel = ravel_pytree(variables.pop("params"))
    params = unravel(flat + 0.01 * jax.random.normal(jax.random.key(2), flat.shape, flat.dtype))
    return model, x, {"params": params, **variables}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward(name):
    model, x, state = small(name)
    params = state.pop("params")
    labels = jnp.arange(len(x)) % CLASSES

    @jax.jit
    def loss_fn(params):
        logits, new_state = model.apply({"params": params, **state}, x, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (logits, new_state)

    grads, (logits, new_state) = jax.grad(loss_fn, has_aux=True)(params)
    assert logits.shape == (len(x), CLASSES) and logits.dtype == jnp.float32
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        path = jax.tree_util.keystr(path)
        assert np.isfinite(g).all(), path
        # Every weight is wired in, except that softmax cancels the attention key bias (it adds the
        # same q.b to all of a query's scores), so its gradient is zero up to rounding.
        assert np.abs(g).max() > 0 or "['key']['bias']" in path, path

    # Training updates every BatchNorm's running statistics; evaluation reads them and leaves them be,
    # so an example's logits do not depend on the rest of the batch.
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
        assert not np.allclose(old, new)
    variables = {"params": params, **new_state}
    evaluate = jax.jit(lambda x: model.apply(variables, x, train=False, mutable=["batch_stats"]))
    logits, after = evaluate(x)
    jax.tree.map(np.testing.assert_array_equal, after, new_state)
    other, _ = evaluate(x.at[1:].set(-x[1:]))
    np.testing.assert_allclose(other[0], logits[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet50", "wrn28_10", "pyramidnet110", "vit_s16"])
def test_bfloat16_compute(name):
    model, x, variables = small(name, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
    logits, captured = jax.jit(partial(model.apply, capture_intermediates=True,
                                       mutable=["intermediates", "batch_stats"]))(variables, x)
    assert logits.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(captured.get("batch_stats", {})))
    outputs = flax.traverse_util.flatten_dict(captured["intermediates"])
    inner = [v for k, v in outputs.items() if k != ("__call__",)]
    assert inner and all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(inner))


@pytest.mark.parametrize("name", ["wrn28_10", "vit_s16"])
def test_dropout(name):
    model, x, variables = small(name, dropout_rate=0.5)
    with pytest.raises(flax.errors.InvalidRngError):
        model.apply(variables, x, mutable=["batch_stats"])
    a, b = (model.apply(variables, x, mutable=["batch_stats"], rngs={"dropout": key(k)})[0]
            for k in (0, 1))
    assert not np.allclose(a, b)
    assert model.apply(variables, x, train=False).shape == (len(x), CLASSES)  # no dropout rng needed
