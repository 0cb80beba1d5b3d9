"""Base optimizers and schedules against the update rules written out by hand."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from looksam import optim


def run(tx, params, grads_seq):
    state = tx.init(params)
    for g in grads_seq:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


PARAMS = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.5, -1.0])}
GRADS = [{"kernel": jnp.array([[0.1, 0.2], [-0.3, 0.4]]), "bias": jnp.array([0.2, -0.1])},
         {"kernel": jnp.array([[-0.2, 0.1], [0.3, 0.1]]), "bias": jnp.array([0.0, 0.3])},
         {"kernel": jnp.array([[0.4, -0.1], [0.0, 0.2]]), "bias": jnp.array([-0.1, 0.1])}]


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_pytorch_sgd_with_coupled_weight_decay(nesterov):
    lr, mu, wd = 0.1, 0.9, 5e-4
    got = run(optim.optimizer("sgd", lr, momentum=mu, nesterov=nesterov, weight_decay=wd),
              PARAMS, GRADS)
    for name in PARAMS:  # torch.optim.SGD, dampening 0
        w, buf = np.asarray(PARAMS[name], np.float64), None
        for g in GRADS:
            d = np.asarray(g[name]) + wd * w
            buf = d if buf is None else mu * buf + d
            w = w - lr * (d + mu * buf if nesterov else buf)
        np.testing.assert_allclose(got[name], w, rtol=1e-6)


def test_weight_decay_mask_skips_biases_and_norm_scales():
    lr, wd = 0.1, 0.1
    zero = [{k: jnp.zeros_like(v) for k, v in PARAMS.items()}]
    got = run(optim.optimizer("sgd", lr, momentum=0.0, weight_decay=wd,
                              weight_decay_mask="kernels"), PARAMS, zero)
    np.testing.assert_allclose(got["bias"], PARAMS["bias"])
    np.testing.assert_allclose(got["kernel"], PARAMS["kernel"] * (1 - lr * wd), rtol=1e-6)


def test_adamw_decoupled_decay():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.05
    got = run(optim.optimizer("adamw", lr, b1=b1, b2=b2, eps=eps, weight_decay=wd), PARAMS, GRADS)
    for name in PARAMS:
        w = np.asarray(PARAMS[name], np.float64)
        m = v = 0.0
        for t, g in enumerate(GRADS, 1):
            g = np.asarray(g[name], np.float64)
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            w = w - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * w)
        np.testing.assert_allclose(got[name], w, rtol=1e-5)


def test_lamb_trust_ratio_per_leaf():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-6, 0.01
    got = run(optim.optimizer("lamb", lr, b1=b1, b2=b2, eps=eps, weight_decay=wd), PARAMS,
              GRADS[:1])
    for name in PARAMS:  # one step: m_hat = g, v_hat = g^2
        w, g = np.asarray(PARAMS[name], np.float64), np.asarray(GRADS[0][name], np.float64)
        r = g / (np.abs(g) + eps) + wd * w
        trust = np.linalg.norm(w) / np.linalg.norm(r)
        np.testing.assert_allclose(got[name], w - lr * trust * r, rtol=1e-5)


def test_clipping_acts_on_the_incoming_gradient_before_weight_decay():
    lr, wd, clip = 1.0, 0.1, 0.5
    big = [{k: 10 * v for k, v in GRADS[0].items()}]
    got = run(optim.optimizer("sgd", lr, momentum=0.0, weight_decay=wd, clip_norm=clip),
              PARAMS, big)
    norm = np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in big[0].values()))
    for name in PARAMS:
        g = np.asarray(big[0][name]) * clip / norm
        np.testing.assert_allclose(got[name], PARAMS[name] - lr * (g + wd * PARAMS[name]),
                                   rtol=1e-5)


def test_warmup_then_cosine():
    sched = optim.schedule(0.1, total_steps=110, warmup_steps=10, decay="cosine")
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(sched(5), 0.05, rtol=1e-6)
    np.testing.assert_allclose(sched(10), 0.1, rtol=1e-6)
    np.testing.assert_allclose(sched(60), 0.1 * 0.5 * (1 + np.cos(np.pi * 0.5)), rtol=1e-5)
    np.testing.assert_allclose(sched(110), 0.0, atol=1e-8)


def test_warmup_then_linear_and_constant():
    lin = optim.schedule(1.0, total_steps=20, warmup_steps=4, decay="linear", end_lr=0.2)
    np.testing.assert_allclose([lin(2), lin(4), lin(12), lin(20)], [0.5, 1.0, 0.6, 0.2], rtol=1e-6)
    const = optim.schedule(0.3, total_steps=20, warmup_steps=0, decay="constant")
    np.testing.assert_allclose([const(0), const(19)], [0.3, 0.3], rtol=1e-6)


@pytest.mark.parametrize("call,words", [
    (lambda: optim.optimizer("adam", 0.1), "unknown base optimizer"),
    (lambda: optim.optimizer("sgd", 0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: optim.optimizer("sgd", 0.1, momentum=1.0), "momentum"),
    (lambda: optim.optimizer("sgd", 0.1, clip_norm=0.0), "clip_norm"),
    (lambda: optim.optimizer("sgd", 0.1, weight_decay_mask="biases"), "weight-decay mask"),
    (lambda: optim.schedule(0.1, 10, warmup_steps=20), "warmup_steps"),
    (lambda: optim.schedule(0.1, 10, decay="step"), "decay"),
])
def test_bad_values_are_rejected(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value)
