"""Direct transcriptions of the spec's formulas on flat parameter vectors.

Independent of `looksam.sam`: no pytree helpers, no microbatching, no shared code; one flat
vector w, L(w) = mean_i l_i(w), and each formula written out as it appears in the spec.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

EPS = 1e-12


class Flat:
    """A problem seen as functions of one flat vector."""

    def __init__(self, loss_fn, params, batch):
        self.w, self.unravel = ravel_pytree(params)
        self.loss_fn, self.batch = loss_fn, batch
        self.sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(params)]

    def losses(self, w, batch=None):
        return self.loss_fn(self.unravel(w), self.batch if batch is None else batch)[0]

    def grad(self, w, batch=None):
        return jax.grad(lambda v: jnp.mean(self.losses(v, batch)))(w)

    def segments(self, v):
        out, start = [], 0
        for size in self.sizes:
            out.append(v[start:start + size])
            start += size
        return out


def sam_eps(g, rho):
    return rho * g / (jnp.linalg.norm(g) + EPS)


def layer_eps(flat, w, g, rho):
    parts = []
    g_norm = jnp.linalg.norm(g)
    for w_l, g_l in zip(flat.segments(w), flat.segments(g), strict=True):
        wn, gn = jnp.linalg.norm(w_l), jnp.linalg.norm(g_l)
        xi = wn / (gn + EPS) if (wn > 0 and gn > 0) else 1.0
        parts.append(rho * xi * g_l / (g_norm + EPS))
    return jnp.concatenate(parts)


def adaptive_eps(w, g, rho):
    return rho * (w**2 * g) / (jnp.linalg.norm(jnp.abs(w) * g) + EPS)


def projection(g, g_s):
    """g_v = g_s - (<g, g_s> / ||g||^2) g."""
    return g_s - (jnp.dot(g, g_s) / (jnp.linalg.norm(g) + EPS) ** 2) * g


def look_reuse(g, g_v, alpha):
    return g + alpha * (jnp.linalg.norm(g) / (jnp.linalg.norm(g_v) + EPS)) * g_v


def sam_grad(flat, w, rho, eps_fn=None, batch=None):
    g = flat.grad(w, batch)
    eps = sam_eps(g, rho) if eps_fn is None else eps_fn(w, g)
    return g, flat.grad(w + eps, batch)


def esam_grad(flat, w, rho, beta, gamma, leaf_mask):
    """ESAM with a given per-leaf keep mask; returns (g_s, selected indices)."""
    g = flat.grad(w)
    mask = jnp.concatenate([jnp.full(size, float(bit)) for size, bit in
                            zip(flat.sizes, leaf_mask, strict=True)])
    mg = mask * g
    eps = (rho / beta) * mg / (jnp.linalg.norm(mg) + EPS)
    n = flat.losses(w).shape[0]
    if gamma == 1:
        return flat.grad(w + eps), np.arange(n)
    s = np.asarray(flat.losses(w + eps) - flat.losses(w))
    count = math.ceil(round(gamma * n, 6))
    selected = np.sort(np.argsort(-s, kind="stable")[:count])
    # The spec computes the second pass on the gathered subset alone (so with BatchNorm the
    # statistics are the subset's), not as a masked mean over the full batch.
    subset = jax.tree.map(lambda x: x[selected], flat.batch)
    return flat.grad(w + eps, batch=subset), selected
