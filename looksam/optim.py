"""Base optimizers and learning-rate schedules, as optax chains built from plain config values.

The sharpness-aware estimator hands its gradient to one of these; weight decay and clipping act
on that final gradient, as in the papers' PyTorch and TPU code.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

OPTIMIZERS = ("sgd", "adamw", "lamb")
DECAYS = ("cosine", "linear", "constant")
DECAY_MASKS = ("all", "kernels")


def schedule(base_lr: float, total_steps: int, warmup_steps: int = 0, decay: str = "cosine",
             init_lr: float = 0.0, end_lr: float = 0.0) -> optax.Schedule:
    """Linear warmup from init_lr to base_lr over warmup_steps, then decay to end_lr at total_steps."""
    if decay not in DECAYS:
        raise ValueError(f"unknown schedule decay {decay!r}; choose one of {DECAYS}")
    if base_lr < 0 or init_lr < 0 or end_lr < 0:
        raise ValueError("learning rates must be >= 0 (base_lr, init_lr, end_lr)")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must lie in [0, total_steps={total_steps}]")
    decay_steps = max(total_steps - warmup_steps, 1)
    if decay == "cosine":
        after = optax.cosine_decay_schedule(base_lr, decay_steps,
                                            alpha=end_lr / base_lr if base_lr else 0.0)
    elif decay == "linear":
        after = optax.linear_schedule(base_lr, end_lr, decay_steps)
    else:
        after = optax.constant_schedule(base_lr)
    if warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(init_lr, base_lr, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def decay_mask(kind: str | Callable) -> Callable | None:
    """'all' decays every leaf; 'kernels' skips biases and norm scales (leaves with ndim <= 1)."""
    if callable(kind):
        return kind
    if kind == "all":
        return None
    if kind == "kernels":
        return lambda params: jax.tree.map(lambda x: x.ndim > 1, params)
    raise ValueError(f"unknown weight-decay mask {kind!r}; choose one of {DECAY_MASKS} or a callable")


def optimizer(name: str, learning_rate: float | optax.Schedule, *, momentum: float = 0.9,
              nesterov: bool = False, weight_decay: float = 0.0, b1: float = 0.9,
              b2: float = 0.999, eps: float | None = None, clip_norm: float | None = None,
              weight_decay_mask: str | Callable = "all") -> optax.GradientTransformation:
    """SGD-momentum (PyTorch-style coupled L2), AdamW or LAMB (decoupled), optionally clipped.

    Clipping acts first, on the estimator's gradient, as torch.nn.utils.clip_grad_norm_ before
    optimizer.step() does.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown base optimizer {name!r}; choose one of {OPTIMIZERS}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum={momentum} must lie in [0, 1)")
    if clip_norm is not None and clip_norm <= 0:
        raise ValueError(f"clip_norm={clip_norm} must be > 0 (or None for no clipping)")
    mask = decay_mask(weight_decay_mask)
    if name == "sgd":
        # torch.optim.SGD: d = g + wd * w; buf = momentum * buf + d; w -= lr * buf.
        base = optax.chain(optax.add_decayed_weights(weight_decay, mask),
                           optax.sgd(learning_rate, momentum or None, nesterov))
    elif name == "adamw":
        base = optax.adamw(learning_rate, b1, b2, 1e-8 if eps is None else eps,
                           weight_decay=weight_decay, mask=mask)
    else:
        base = optax.lamb(learning_rate, b1, b2, 1e-6 if eps is None else eps,
                          weight_decay=weight_decay, mask=mask)
    if clip_norm is None:
        return base
    return optax.chain(optax.clip_by_global_norm(clip_norm), base)
