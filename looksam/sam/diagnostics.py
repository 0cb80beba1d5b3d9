"""Training diagnostics that reproduce the papers' figures from the estimator's internals: LookSAM
Figure 2 (gradient drift), ESAM Figures 5 (the subsets' losses) and 6 (the subsets' gradients)."""

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


def subset_losses(losses, sharpness, selected):
    """ESAM Figure 5: the mean loss of SDS's selected subset B+ and of the rejected B-, at w
    (`esam_loss_*_empirical`, l_i(w)) and at w + eps (`esam_loss_*_sam`, l_i(w) + s_i).

    Free: SDS has already computed l_i(w) and s_i = l_i(w + eps) - l_i(w) for every example.
    `selected` is the boolean mask of B+; an empty subset gives 0, not NaN.
    """
    metrics = {}
    for name, mask in (("selected", selected), ("rejected", ~selected)):
        count = jnp.maximum(mask.sum(), 1)
        metrics[f"esam_loss_{name}_empirical"] = jnp.where(mask, losses, 0).sum() / count
        metrics[f"esam_loss_{name}_sam"] = jnp.where(mask, losses + sharpness, 0).sum() / count
    return metrics


def subset_cosines(subset_grad, params, perturbed, chosen, selected, g, g_s, gamma):
    """ESAM Figure 6: cosines of grad L_{B+} and grad L_{B-} with grad L_B, at w + eps and w.

    `subset_grad(w, idx)` is grad L_S(w) for the examples idx, L_S being the mean loss over S.
    Given g = grad L_B(w) and g_s = grad L_{B+}(w + eps), one backward pass on B- at w + eps and
    one on B+ at w (|B| examples together) give the rest, since L_B is the size-weighted mean of
    L_{B+} and L_{B-}:
    grad L_B(w + eps) = (|B+| g_s + |B-| grad L_{B-}(w + eps)) / |B| and
    grad L_{B-}(w) = (|B| g - |B+| grad L_{B+}(w)) / |B-|.
    """
    n, n_plus = selected.shape[0], chosen.shape[0]
    n_minus = n - n_plus
    if n_minus < 1:
        raise ValueError(f"subset_cosines needs a non-empty B-: gamma={gamma} selects all "
                         f"{n} examples of a group")
    rejected = jnp.argsort(selected, stable=True)[:n_minus]  # the unselected, in index order
    g_minus_sam = subset_grad(perturbed, rejected)
    g_plus = subset_grad(params, chosen)
    g_sam = jax.tree.map(lambda a, b: (n_plus * a + n_minus * b) / n, g_s, g_minus_sam)
    g_minus = jax.tree.map(lambda a, b: (n * a - n_plus * b) / n_minus, g, g_plus)
    return {"esam_cos_selected_sam": look.cosine(g_s, g_sam),
            "esam_cos_rejected_sam": look.cosine(g_minus_sam, g_sam),
            "esam_cos_selected_empirical": look.cosine(g_plus, g),
            "esam_cos_rejected_empirical": look.cosine(g_minus, g)}
