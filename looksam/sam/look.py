"""LookSAM's gradient reuse (Liu et al., CVPR 2022, Algorithm 1)."""

from __future__ import annotations

import optax.tree_utils as otu

from looksam.sam.perturb import EPS


def orthogonal_component(g, g_s):
    """SAM step, eq. 5: g_v = g_s - (<g, g_s> / ||g||^2) g, the part of g_s orthogonal to g."""
    coeff = otu.tree_vdot(g, g_s) / (otu.tree_norm(g) + EPS) ** 2
    return otu.tree_add_scale(g_s, -coeff, g)


def reuse(g, g_v, alpha):
    """Reuse step: g + alpha * (||g|| / ||g_v||) g_v, the adaptive ratio keeping both at one scale."""
    ratio = otu.tree_norm(g) / (otu.tree_norm(g_v) + EPS)
    return otu.tree_add_scale(g, alpha * ratio, g_v)


def cosine(x, y):
    return otu.tree_vdot(x, y) / ((otu.tree_norm(x) + EPS) * (otu.tree_norm(y) + EPS))
