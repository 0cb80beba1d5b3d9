"""The sharpness-aware gradient estimators behind `sam.make` (see docs/sharpness-aware.md).

An `Estimator` is a frozen (hashable, jit-static) description of a method; `gradient` is a pure
function of (params, batch, state, rng) that returns the gradient to hand to the base optimizer.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from looksam.sam import batching, diagnostics, esam, look, perturb

METHODS = ("none", "sam", "sam_k", "looksam", "layersam", "look_layersam", "esam")
PERIODIC = ("sam_k", "looksam", "look_layersam")
REUSES_G_V = ("looksam", "look_layersam")
LAYERWISE = ("layersam", "look_layersam")

# Each method's own hyper-parameters; `microbatch` applies to all, `adaptive` and `m` to every
# method with a perturbation. ESAM's `subset_cosines` is a diagnostic (ESAM Figure 6) that costs a
# pass, so it sits here to reach `sam.make` (and the cost estimates) from a config's `sam` group.
HPARAMS = {
    "none": (),
    "sam": ("rho",),
    "sam_k": ("rho", "k"),
    "looksam": ("rho", "k", "alpha"),
    "layersam": ("rho",),
    "look_layersam": ("rho", "k", "alpha"),
    "esam": ("rho", "beta", "gamma", "subset_cosines"),
}
DEFAULTS = dict(rho=0.05, k=5, alpha=0.7, beta=0.6, gamma=0.5, adaptive=False, m=None,
                microbatch=None, in_graph="auto", batch_sharding=None, drift_interval=None,
                subset_cosines=False)
IN_GRAPH = ("auto", "cond", "select")


class EstimatorState(NamedTuple):
    step: jax.Array  # int32 global step t: counts every call, survives checkpoint/resume
    g_v: Any  # LookSAM's stored orthogonal component (a params-shaped pytree), else None
    drift: Any = None  # with drift_interval: the (g_s, g_h, g_v) snapshot of LookSAM Figure 2


class GradientOutput(NamedTuple):
    aux: Any  # aux of the clean pass (BatchNorm statistics come from there)
    metrics: dict  # scalar arrays


@dataclasses.dataclass(frozen=True)
class Estimator:
    method: str
    rho: float = DEFAULTS["rho"]
    k: int = DEFAULTS["k"]
    alpha: float = DEFAULTS["alpha"]
    beta: float = DEFAULTS["beta"]
    gamma: float = DEFAULTS["gamma"]
    adaptive: bool = False
    m: int | None = None
    microbatch: int | None = None
    in_graph: str = "auto"  # how sam_step=None branches: "cond", "select", "auto" (by backend)
    # The batch's sharding (e.g. NamedSharding(mesh, P("data"))). ESAM's selected subset is a
    # gather, which XLA would otherwise replicate: every device would compute the whole subset.
    batch_sharding: Any = None
    # LookSAM Figure 2: every `drift_interval` steps, metrics grad_change_{g_s,g_h,g_v}.
    drift_interval: int | None = None
    # ESAM Figure 6: metrics esam_cos_{selected,rejected}_{sam,empirical}, the cosines of the B+
    # and B- gradients with the whole batch's (one extra pass; needs gamma < 1).
    subset_cosines: bool = False

    # ---- host-side schedule and cost -------------------------------------------------------
    @property
    def perturbs(self) -> bool:
        return self.method != "none"

    @property
    def period(self) -> int:
        return self.k if self.method in PERIODIC else 1

    def is_sam_step(self, t: int) -> bool:
        """Whether global step t is a SAM step (a Python bool, decided on the host)."""
        return self.perturbs and int(t) % self.period == 0

    def passes(self, sam_step: bool) -> float:
        """Cost of one step in forward+backward passes (a forward alone counts 1/3)."""
        if not (sam_step and self.perturbs):
            return 1.0
        if self.method == "esam" and self.gamma < 1:
            # subset_cosines: backward passes on B- at w + eps and on B+ at w, |B| examples in all
            return 1.0 + 1.0 / 3.0 + self.gamma + (1.0 if self.subset_cosines else 0.0)
        return 2.0

    @property
    def ideal_cost(self) -> float:
        """Mean passes per step over one period: the spec's ideal step-time ratio to `none`."""
        return (self.passes(True) + (self.period - 1) * self.passes(False)) / self.period

    # ---- state --------------------------------------------------------------------------
    def init(self, params) -> EstimatorState:
        g_v = otu.tree_zeros_like(params) if self.method in REUSES_G_V else None
        drift = diagnostics.empty_snapshot(params) if self.drift_interval else None
        return EstimatorState(step=jnp.zeros([], jnp.int32), g_v=g_v, drift=drift)

    # ---- the gradient -------------------------------------------------------------------
    def gradient(self, loss_fn, params, batch, state, rng=None, sam_step=None):
        """Returns (grads, new_state, GradientOutput(aux, metrics)).

        sam_step: static True/False compiles only that branch (the trainer decides on the host
        with `is_sam_step`); None decides in-graph from `state.step` (see `_in_graph`).
        """
        self._check_batch(batch)
        if self.method == "esam" and self.beta < 1 and rng is None:
            raise ValueError("esam with beta < 1 draws its weight mask from `rng`: pass a PRNG key")
        if sam_step is None:
            if self.period == 1:
                sam_step = self.perturbs
            else:
                return self._in_graph(loss_fn, params, batch, state, rng)
        if sam_step and not self.perturbs:
            raise ValueError("method 'none' has no SAM steps: pass sam_step=False or None")
        if not sam_step and self.perturbs and self.period == 1:
            raise ValueError(f"method {self.method!r} perturbs every step: pass sam_step=True or None")
        step = self._sam_step if sam_step else self._clean_step
        grads, g, g_v, aux, metrics = step(loss_fn, params, batch, state.g_v, rng)
        drift = state.drift
        if self.drift_interval:  # every step is a SAM step here (checked by make)
            changes, drift = diagnostics.gradient_drift(g, grads, drift, state.step, self.drift_interval)
            metrics = {**metrics, **changes}
        return grads, EstimatorState(state.step + 1, g_v, drift), GradientOutput(aux, metrics)

    def _in_graph(self, loss_fn, params, batch, state, rng):
        """Decides the SAM step from state.step inside the compiled graph.

        "cond" runs only the taken branch; "select" computes the SAM step every time and picks
        the reuse result from the same clean gradient (cost of a SAM step, but no control flow).
        On XLA:CPU a convolution's gradient inside a `lax.cond` branch ran 70-80x slower than
        outside one (scripts/bench_methods.py: 18.9 s per step against 0.27 s dispatched from the
        host), so "auto" selects on CPU. On an H100, `lax.cond` cost 1.207x `none` against 1.200x
        for host dispatch, so "auto" uses it on accelerators.
        """
        is_sam = state.step % self.period == 0
        mode = self.in_graph
        if mode == "auto":
            mode = "select" if jax.default_backend() == "cpu" else "cond"
        if mode == "cond":
            return jax.lax.cond(
                is_sam,
                lambda: self.gradient(loss_fn, params, batch, state, rng, sam_step=True),
                lambda: self.gradient(loss_fn, params, batch, state, rng, sam_step=False))
        g_s, g, g_v, aux, metrics = self._sam_step(loss_fn, params, batch, state.g_v, rng)
        reuse = self._reuse(g, state.g_v)
        reuse_metrics = self._metrics(g, reuse, state.g_v, metrics["loss"], sam_step=False)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(is_sam, x, y), a, b)  # noqa: E731
        return (pick(g_s, reuse), EstimatorState(state.step + 1, pick(g_v, state.g_v), state.drift),
                GradientOutput(aux, pick(metrics, reuse_metrics)))

    def _metrics(self, g, grads, g_v, loss, sam_step, previous_g_v=None):
        metrics = dict(sam_step=jnp.float32(sam_step), loss=loss, grad_norm=otu.tree_norm(g))
        if self.perturbs:
            metrics["cos_g_gs"] = look.cosine(g, grads)
        if g_v is not None:
            metrics["g_v_norm"] = otu.tree_norm(g_v)
        if self.method in REUSES_G_V:
            # How far g_v moves between SAM steps, k steps apart (what the reuse steps assume
            # is small): cos(g_v(t), g_v(t - k)) and ||g_v(t) - g_v(t - k)|| / ||g_v(t - k)||.
            # NaN on reuse steps and at the first SAM step (no g_v yet): "not measured".
            nan = jnp.float32(jnp.nan)
            metrics["g_v_cos_prev"], metrics["g_v_change"] = nan, nan
            if sam_step and previous_g_v is not None:
                before = otu.tree_norm(previous_g_v)
                change = otu.tree_norm(otu.tree_sub(g_v, previous_g_v)) / jnp.where(before > 0, before, 1)
                metrics["g_v_cos_prev"] = jnp.where(before > 0, look.cosine(g_v, previous_g_v), nan)
                metrics["g_v_change"] = jnp.where(before > 0, change, nan)
        return metrics

    # Both steps return (gradient for the optimizer, clean gradient g, g_v, aux, metrics).
    def _clean_step(self, loss_fn, params, batch, g_v, rng):
        """A step without a perturbation: `none`, or a reuse step of sam_k / LookSAM."""
        del rng
        g, losses, aux = self._over_groups(
            lambda b, size: batching.mean_grad(loss_fn, params, b, size), batch)
        grads = self._reuse(g, g_v)
        return grads, g, g_v, aux, self._metrics(g, grads, g_v, jnp.mean(losses), sam_step=False)

    def _reuse(self, g, g_v):
        return look.reuse(g, g_v, self.alpha) if self.method in REUSES_G_V else g

    def _sam_step(self, loss_fn, params, batch, g_v, rng):
        def group(b, size):
            return self._perturbed_gradients(loss_fn, params, b, rng, size)

        (g, g_s, cosines), (losses, sharpness, selected), aux = self._over_groups(group, batch)
        previous_g_v = g_v
        if self.method in REUSES_G_V:
            g_v = look.orthogonal_component(g, g_s)
        metrics = self._metrics(g, g_s, g_v, jnp.mean(losses), sam_step=True,
                                previous_g_v=previous_g_v)
        if self.method == "esam":
            group_size = self.m or batching.batch_size(batch)
            metrics["selected_fraction"] = jnp.float32(
                esam.sds_count(self.gamma, group_size) / group_size)
            metrics["sharpness"] = jnp.mean(sharpness)
            if self.gamma < 1:  # ESAM Figure 5: both subsets' losses at w and w + eps (free)
                for name, mask in (("selected", selected), ("rejected", ~selected)):
                    count = jnp.maximum(mask.sum(), 1)
                    metrics[f"esam_loss_{name}_empirical"] = jnp.where(mask, losses, 0).sum() / count
                    metrics[f"esam_loss_{name}_sam"] = jnp.where(
                        mask, losses + sharpness, 0).sum() / count
            metrics.update(cosines)  # ESAM Figure 6 (subset_cosines): means over m-groups
        return g_s, g, g_v, aux, metrics

    def _perturbed_gradients(self, loss_fn, params, batch, rng, size):
        """On one group: ((g, g_s, cosines), (l_i(w), s_i, i selected), aux).

        ESAM's SDS when gamma < 1; `cosines` is {} unless `subset_cosines` (a dict of scalars,
        returned with the sums so that m-sharpness averages it over groups).
        """
        g, losses, aux = batching.mean_grad(loss_fn, params, batch, size)
        perturbed = otu.tree_add(params, self._epsilon(params, g, rng))
        selected = jnp.ones(losses.shape, bool)
        cosines = {}
        if self.method == "esam" and self.gamma < 1:
            sharpness = batching.forward_losses(loss_fn, perturbed, batch, size) - losses
            chosen = esam.sds_select(sharpness, self.gamma)
            selected = jnp.zeros(losses.shape, bool).at[chosen].set(True)
            g_s = batching.mean_grad(loss_fn, perturbed, self._gather(batch, chosen), size)[0]
            if self.subset_cosines:
                cosines = self._subset_cosines(loss_fn, params, perturbed, batch, chosen, selected,
                                               g, g_s, size)
        else:
            g_s, perturbed_losses, _ = batching.mean_grad(loss_fn, perturbed, batch, size)
            sharpness = perturbed_losses - losses
        return (g, g_s, cosines), (losses, sharpness, selected), aux

    def _gather(self, batch, idx):
        subset = batching.take(batch, idx)
        if self.batch_sharding is not None:
            subset = jax.lax.with_sharding_constraint(subset, self.batch_sharding)
        return subset

    def _subset_cosines(self, loss_fn, params, perturbed, batch, chosen, selected, g, g_s, size):
        """ESAM Figure 6: cosines of grad L_{B+} and grad L_{B-} with grad L_B, at w + eps and w.

        Given g = grad L_B(w) and g_s = grad L_{B+}(w + eps), one backward pass on B- at w + eps
        and one on B+ at w (|B| examples together) give the rest, L_S being the mean over S:
        grad L_B(w + eps) = (|B+| g_s + |B-| grad L_{B-}(w + eps)) / |B| and
        grad L_{B-}(w) = (|B| g - |B+| grad L_{B+}(w)) / |B-|.
        """
        n, n_plus = selected.shape[0], chosen.shape[0]
        n_minus = n - n_plus
        if n_minus < 1:
            raise ValueError(f"subset_cosines needs a non-empty B-: gamma={self.gamma} selects all "
                             f"{n} examples of a group")
        rejected = jnp.argsort(selected, stable=True)[:n_minus]  # the unselected, in index order
        g_minus_sam = batching.mean_grad(loss_fn, perturbed, self._gather(batch, rejected), size)[0]
        g_plus = batching.mean_grad(loss_fn, params, self._gather(batch, chosen), size)[0]
        g_sam = jax.tree.map(lambda a, b: (n_plus * a + n_minus * b) / n, g_s, g_minus_sam)
        g_minus = jax.tree.map(lambda a, b: (n * a - n_plus * b) / n_minus, g, g_plus)
        return {"esam_cos_selected_sam": look.cosine(g_s, g_sam),
                "esam_cos_rejected_sam": look.cosine(g_minus_sam, g_sam),
                "esam_cos_selected_empirical": look.cosine(g_plus, g),
                "esam_cos_rejected_empirical": look.cosine(g_minus, g)}

    def _epsilon(self, params, g, rng):
        rho = self.rho
        if self.method == "esam" and self.beta < 1:
            g = esam.apply_mask(esam.swp_mask(rng, params, self.beta), g)
            rho = rho / self.beta
        if self.adaptive:
            return perturb.adaptive_epsilon(params, g, rho)
        if self.method in LAYERWISE:
            return perturb.layer_epsilon(params, g, rho)
        return perturb.sam_epsilon(params, g, rho)

    def _over_groups(self, fn, batch):
        """fn(group_batch, microbatch) -> (sums, per_example, aux) over the whole batch.

        m = None: one group, microbatched inside fn. m-sharpness: groups of m examples vmapped,
        `microbatch / m` groups per scanned chunk; sums become means over groups.
        """
        if self.m is None:
            return fn(batch, self.microbatch)
        groups = batching.split(batch, self.m)  # [n / m, m, ...]: consecutive examples per group

        def chunk(gs):
            sums, per_example, aux = jax.vmap(lambda g: fn(g, None))(gs)
            return jax.tree.map(lambda x: x.sum(0), sums), per_example, batching.reduce_aux(aux)

        per_chunk = None if self.microbatch is None else self.microbatch // self.m
        sums, per_example, aux = batching.accumulate(chunk, groups, per_chunk)
        num_groups = batching.batch_size(groups)
        return otu.tree_scale(1.0 / num_groups, sums), batching.merge(per_example), aux

    def _check_batch(self, batch):
        n = batching.batch_size(batch)
        if self.m is not None and n % self.m:
            raise ValueError(f"m={self.m} must divide the per-step batch of {n} examples")
        if self.microbatch is not None and n % self.microbatch:
            raise ValueError(
                f"microbatch={self.microbatch} must divide the per-step batch of {n} examples")


def make(method: str, **hparams) -> Estimator:
    """Builds a validated estimator: `make("looksam", rho=0.05, k=5, alpha=0.7)`."""
    if method not in METHODS:
        raise ValueError(f"unknown sharpness-aware method {method!r}; choose one of {METHODS}")
    if "subset_cosines" in hparams and method != "esam":
        raise ValueError(f"subset_cosines is ESAM's Figure 6 diagnostic (cosines of the SDS subsets' "
                         f"gradients): use it with method 'esam', not {method!r}")
    allowed = set(HPARAMS[method]) | {"microbatch", "in_graph", "batch_sharding"}
    if method != "none":
        allowed |= {"adaptive", "m", "drift_interval"}
    unexpected = sorted(set(hparams) - allowed)
    if unexpected:
        raise ValueError(f"method {method!r} takes {sorted(allowed)}; got unexpected {unexpected}")
    hp = {**DEFAULTS, **hparams}
    _check_real(hp["rho"], "rho", "rho >= 0", lambda v: v >= 0)
    _check_real(hp["alpha"], "alpha", "alpha >= 0", lambda v: v >= 0)
    _check_real(hp["beta"], "beta", "0 < beta <= 1", lambda v: 0 < v <= 1)
    _check_real(hp["gamma"], "gamma", "0 < gamma <= 1", lambda v: 0 < v <= 1)
    _check_int(hp["k"], "k", allow_none=False)
    for name in ("m", "microbatch", "drift_interval"):
        _check_int(hp[name], name, allow_none=True)
    if hp["drift_interval"] is not None and method in PERIODIC:
        raise ValueError(f"drift_interval measures SAM training (LookSAM Figure 2): use it with a "
                         f"method that perturbs every step (sam, layersam, esam), not {method}")
    if not isinstance(hp["adaptive"], bool):
        raise ValueError(f"adaptive must be True or False, got {hp['adaptive']!r}")
    if hp["adaptive"] and method in LAYERWISE:
        raise ValueError(f"adaptive=True does not combine with {method}'s layer-wise scaling xi: "
                         "use adaptive with sam, sam_k, looksam or esam")
    if hp["in_graph"] not in IN_GRAPH:
        raise ValueError(f"in_graph={hp['in_graph']!r}: choose one of {IN_GRAPH}")
    m, mb = hp["m"], hp["microbatch"]
    if not isinstance(hp["subset_cosines"], bool):
        raise ValueError(f"subset_cosines must be True or False, got {hp['subset_cosines']!r}")
    if hp["subset_cosines"] and hp["gamma"] >= 1:
        raise ValueError(f"subset_cosines needs gamma < 1 (got gamma={hp['gamma']!r}): with gamma "
                         "= 1 SDS selects the whole batch and there is no rejected subset B-")
    if hp["subset_cosines"] and m is not None and esam.sds_count(hp["gamma"], m) >= m:
        raise ValueError(f"subset_cosines needs a non-empty B- in each m-sharpness group: "
                         f"gamma={hp['gamma']!r} selects all of m={m} examples")
    if m is not None and mb is not None and mb % m:
        raise ValueError(f"microbatch={mb} must be a multiple of m={m}: each microbatch holds "
                         "whole m-sharpness groups")
    return Estimator(method=method, rho=float(hp["rho"]), k=int(hp["k"]),
                     alpha=float(hp["alpha"]), beta=float(hp["beta"]),
                     gamma=float(hp["gamma"]), adaptive=hp["adaptive"],
                     m=None if m is None else int(m), microbatch=None if mb is None else int(mb),
                     in_graph=hp["in_graph"], batch_sharding=hp["batch_sharding"],
                     drift_interval=hp["drift_interval"], subset_cosines=hp["subset_cosines"])


def _check_real(value, name, valid, ok):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not ok(value):
        raise ValueError(f"{name}={value!r} is out of range: need {valid}")


def _check_int(value, name, allow_none):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} is out of range: need an integer >= 1"
                         + (" (or None)" if allow_none else ""))
