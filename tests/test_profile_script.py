"""scripts/profile_step.py's bookkeeping: which HLO instruction is which kind of op, and the
per-category split of a step adding up to the step (timings themselves are not tested)."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_convolution_gradient_has_forward_and_backward_convolutions():
    profile = script("profile_step")

    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y).sum()

    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    text = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()
    categories = {profile.hlo_category(op, name) for name, op in profile.op_names(text).items()}
    # jax.grad of one convolution: the forward one, then two in the transpose (input and weights).
    assert {"convolution, forward", "convolution, backward"} <= categories
    assert "BatchNorm" not in categories


def test_torch_ops_fall_in_the_same_categories():
    profile = script("profile_step")
    assert profile.torch_category("aten::convolution_backward") == "convolution, backward"
    assert profile.torch_category("aten::mkldnn_convolution") == "convolution, forward"
    assert profile.torch_category("aten::native_batch_norm_backward") == "BatchNorm"
    assert profile.torch_category("aten::addmm") == "dense layer"
    assert profile.torch_category("aten::add_") == "elementwise, reductions, optimizer"
    assert profile.torch_category("Optimizer.step#SGD.step") is None


def test_the_categories_add_up_to_the_step():
    profile = script("profile_step")
    split = profile.shares(0.5, {"BatchNorm": 30.0, "convolution, forward": 10.0})
    assert split["BatchNorm"] == pytest.approx(375.0)  # 3/4 of 500 ms
    assert split["convolution, forward"] == pytest.approx(125.0)
    assert sum(split.values()) == pytest.approx(500.0)


def test_the_flag_screen_needs_its_reference():
    flags = script("bench_xla_flags")
    with pytest.raises(SystemExit):
        flags.main(["--candidates", "eigen-conv"])
