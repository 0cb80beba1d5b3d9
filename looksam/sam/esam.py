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


# How SDS picks B+ from a group of n examples by sharpness s_i:
#   "ceil": the ceil(gamma n) largest (the paper's "top gamma of the batch").
#   "official": dydjw9/Efficient_SAM utils/Esam.py, ESAM.step(): position = int(n * gamma),
#     cutoff = the position-th largest s_i, B+ = {i: s_i > cutoff}, so position - 1 examples (31
#     of 64 at gamma 0.5) when no two s_i tie; gamma >= 0.99 keeps the whole group.
SELECTIONS = ("ceil", "official")
OFFICIAL_KEEPS_ALL = 0.99  # Esam.py: `if prob >= 0.99: indices = range(len(targets))`


def sds_count(gamma, n, selection="ceil"):
    """|B+| for a group of n: ceil(gamma n) (rounded first, so 0.7 * 10 stays 7, not 8), or the
    official rule's position - 1 = int(gamma n) - 1 (Python's int(), as the official code; at
    most that many, when sharpness values tie at the cutoff)."""
    if selection == "official":
        return n if gamma >= OFFICIAL_KEEPS_ALL else int(n * gamma) - 1
    return max(1, math.ceil(round(gamma * n, 6)))


def sds_select(sharpness, gamma, selection="ceil"):
    """SDS over one group: (indices of B+ [count], weights [count] summing to 1).

    The gradient is sum_j weights_j grad l_{indices_j}: the mean over B+. Under "official" an
    index whose s_i ties the cutoff gets weight 0 (the official `>` drops it), so the mean is over
    the examples strictly above it, as there; the static size is the count without ties.
    """
    n = sharpness.shape[0]
    count = sds_count(gamma, n, selection)
    values, indices = jax.lax.top_k(sharpness, count)
    if selection == "ceil" or count == n:
        return indices, jnp.full((count,), 1.0 / count, jnp.float32)
    cutoff = jax.lax.top_k(sharpness, count + 1)[0][-1]
    above = (values > cutoff).astype(jnp.float32)
    return indices, above / jnp.maximum(above.sum(), 1.0)
