"""SWP that skips the dropped tensors' weight gradients in the clean backward (`sam.swp_skip`).

ESAM's SWP (Section 2.2) perturbs with the kept tensors of the clean gradient only. Computing the
gradient of every tensor and zeroing the dropped ones (esam.apply_mask, the default) pays the whole
backward pass; the official code sets `requires_grad = False` on the dropped tensors before the
first backward (utils/Esam.py, ESAM.step), so their weight gradients are never formed.

Here each Flax layer that owns a `kernel` runs, inside the clean pass, as

    out = lax.cond(keep_kernel, layer(x; kernel, ...), layer(x; stop_gradient(kernel), ...))

The transpose of a `cond` is a `cond` of the branches' transposes, so on a step where the kernel is
dropped only the input's cotangent is formed, not the kernel's (for a convolution: no
backprop-filter convolution). Biases and BatchNorm scales are cheap and stay masked after the
fact. The gradient handed on is unchanged: the caller still applies the mask, and a dropped
kernel's gradient is zero either way (tests/test_swp_skip.py).

It is an optimisation meant for accelerators: XLA:CPU runs a convolution inside a `lax.cond` far
slower than outside one (docs/sharpness-aware.md, "SWP's skipped gradients", with the CPU
benchmark), so it is off by default. Only Flax linen models are reached (the layers are found with
`nn.intercept_methods`); under any other model the context changes nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping

import flax.linen as nn
import jax

_inside = threading.local()  # set while a layer runs in its cond: its own call is not intercepted


def _keep_bits(mask, path):
    """The keep bits of the module at `path` (its own leaves), or None when the mask has none."""
    node = mask
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            return None
        node = node[name]
    return node if isinstance(node, Mapping) else None


def _interceptor(mask):
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (getattr(_inside, "active", False) or context.method_name != "__call__"
                or module.scope is None):
            return next_fun(*args, **kwargs)
        params = module.variables.get("params", {})
        bits = _keep_bits(mask, module.scope.path)
        # A layer: its own params are arrays, one of them the kernel (not a block of layers).
        if (bits is None or "kernel" not in params or "kernel" not in bits
                or any(isinstance(v, Mapping) for v in params.values())):
            return next_fun(*args, **kwargs)
        layer, _ = module.unbind()

        def run(kernel):
            _inside.active = True
            try:
                return layer.apply({"params": {**params, "kernel": kernel}}, *args, **kwargs)
            finally:
                _inside.active = False

        kernel = params["kernel"]
        return jax.lax.cond(bits["kernel"], lambda: run(kernel),
                            lambda: run(jax.lax.stop_gradient(kernel)))

    return intercept


def skipping(mask):
    """Context for the clean pass: each kernel whose keep bit in `mask` (a pytree of booleans like
    params, esam.swp_mask) is False gets no weight gradient (zero, not computed)."""
    if mask is None:
        return contextlib.nullcontext()
    return nn.intercept_methods(_interceptor(mask))
