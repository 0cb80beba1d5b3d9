"""Training diagnostics that need the estimator's internals (LookSAM Figure 2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from looksam.sam import look

NAMES = ("g_s", "g_h", "g_v")


def empty_snapshot(params):
    return tuple(otu.tree_zeros_like(params) for _ in NAMES)


def gradient_drift(g, g_s, snapshot, step, interval):
    """LookSAM Figure 2: ||x_t - x_{t-interval}|| for x in (g_s, g_h, g_v), where g_h is g_s's
    component along g and g_v = g_s - g_h (eq. 5). Measured every `interval` steps against a
    snapshot taken `interval` steps earlier; NaN (not measured) on the other steps."""
    g_v = look.orthogonal_component(g, g_s)
    current = (g_s, otu.tree_sub(g_s, g_v), g_v)
    due = step % interval == 0
    measured = due & (step >= interval)
    metrics = {f"grad_change_{name}": jnp.where(measured, otu.tree_norm(otu.tree_sub(x, old)), jnp.nan)
               for name, x, old in zip(NAMES, current, snapshot, strict=True)}
    snapshot = jax.tree.map(lambda x, old: jnp.where(due, x, old), current, snapshot)
    return metrics, snapshot
