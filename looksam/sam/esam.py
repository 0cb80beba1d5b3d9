"""ESAM (Du et al., ICLR 2022): stochastic weight perturbation and sharpness-sensitive data selection."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def swp_mask(key, params, beta):
    """SWP: one Bernoulli(beta) *keep* bit per leaf, in `jax.tree.leaves` order.

    `beta` is the keep probability, as in the official code (the paper's Algorithm 1 writes
    1 - beta). The estimator then perturbs by eps = (rho / beta) m*g / ||m*g||, as the official
    code does: the masked gradient is normalised by its own norm, so ||eps|| = rho / beta (not
    rho) whenever a leaf is kept, and E[eps] is not SAM's rho g / ||g||: leaf l's expected
    component is (rho / beta) g_l beta E[1 / ||m*g|| | m_l = 1] >= rho g_l / ||g|| (as
    ||m*g|| <= ||g||), equal only for beta = 1 or when g lies in that leaf alone. The paper's
    argument (Section 2.2, Eq. 5) that the expectation is SAM's holds for masking SAM's eps
    itself, m*eps / beta with eps = rho g / ||g|| normalised by the full gradient's norm, which
    is not what is computed here.
    """
    leaves, treedef = jax.tree.flatten(params)
    bits = jax.random.bernoulli(key, beta, (len(leaves),))
    return jax.tree.unflatten(treedef, [bits[i] for i in range(len(leaves))])


def apply_mask(mask, g):
    return jax.tree.map(lambda keep, g_l: jnp.where(keep, g_l, jnp.zeros_like(g_l)), mask, g)


def sds_count(gamma, n):
    """|B+| = ceil(gamma * n). The official code keeps one fewer (a strict `>` against the
    ceil(gamma n)-th value); we follow the paper. Rounding first keeps 0.7 * 10 at 7, not 8."""
    return max(1, math.ceil(round(gamma * n, 6)))


def sds_select(sharpness, gamma):
    """SDS: indices of the ceil(gamma n) examples with the largest s_i = l_i(w + eps) - l_i(w)."""
    return jax.lax.top_k(sharpness, sds_count(gamma, sharpness.shape[0]))[1]
