"""The inner-maximisation step: the weight perturbation epsilon of each method.

All functions are pure maps over pytrees. A *layer* is one pytree leaf (a kernel and its bias are
two layers), as in `optax.lamb`'s trust ratio and the PyTorch reference code. Every norm in a
denominator gets `EPS`, so a zero gradient gives a zero perturbation, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

EPS = 1e-12


def sam_epsilon(params, g, rho):
    """SAM (Foret et al., eq. 2): eps = rho * g / ||g||."""
    del params
    return otu.tree_scale(rho / (otu.tree_norm(g) + EPS), g)


def layer_epsilon(params, g, rho):
    """LayerSAM (LookSAM eq. 7): eps_l = rho * xi_l * g_l / ||g||, xi_l = ||w_l|| / ||g_l||.

    xi_l = 1 for a layer whose weight or gradient norm is zero (the ratio carries no scale there).
    """
    g_norm = otu.tree_norm(g)

    def leaf(w, g_l):
        w_norm, g_l_norm = jnp.linalg.norm(w.ravel()), jnp.linalg.norm(g_l.ravel())
        xi = jnp.where((w_norm > 0) & (g_l_norm > 0), w_norm / (g_l_norm + EPS), 1.0)
        return (rho * xi / (g_norm + EPS)) * g_l

    return jax.tree.map(leaf, params, g)


def adaptive_epsilon(params, g, rho):
    """ASAM (Kwon et al.): eps = rho * (w^2 * g) / || |w| * g ||."""
    scaled_norm = otu.tree_norm(jax.tree.map(lambda w, g_l: jnp.abs(w) * g_l, params, g))
    return jax.tree.map(lambda w, g_l: (rho / (scaled_norm + EPS)) * (w * w) * g_l, params, g)
