"""The sharpness-aware gradient estimators behind `sam.make` (see docs/sharpness-aware.md).

An `Estimator` is a frozen (hashable, jit-static) description of a method; `gradient` is a pure
function of (params, batch, state, rng) that returns the gradient to hand to the base optimizer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jax.sharding import PartitionSpec as P

from looksam.sam import batching, diagnostics, esam, look, perturb, swp_skip


class _Kind(NamedTuple):
    """What a method's name alone fixes; `resolve` adds the hyper-parameters to make `Parts`."""
    perturbs: bool  # has SAM steps at all
    periodic: bool  # a SAM step every k steps, plain steps between
    reuses_g_v: bool  # LookSAM: the plain steps add back the stored g_v
    layerwise: bool  # LayerSAM: epsilon scaled per layer by xi_l = ||w_l|| / ||g_l||
    esam: bool  # ESAM: SWP (beta) and SDS (gamma)


# The one place that reads a method's name: everything downstream asks for a part, so that a
# method means the same thing wherever it is used.
_KINDS = {  # perturbs, periodic, reuses_g_v, layerwise, esam
    "none": _Kind(False, False, False, False, False),
    "sam": _Kind(True, False, False, False, False),
    "sam_k": _Kind(True, True, False, False, False),
    "looksam": _Kind(True, True, True, False, False),
    "layersam": _Kind(True, False, False, True, False),
    "look_layersam": _Kind(True, True, True, True, False),
    "esam": _Kind(True, False, False, False, True),
}
METHODS = tuple(_KINDS)

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
    "esam": ("rho", "beta", "gamma", "selection", "subset_cosines", "swp_skip"),
}
DEFAULTS = dict(rho=0.05, k=5, alpha=0.7, beta=0.6, gamma=0.5, selection="ceil", adaptive=False, m=None,
                microbatch=None, in_graph="auto", batch_sharding=None, drift_interval=None,
                subset_cosines=False, group_map="auto", swp_skip=False)
IN_GRAPH = ("auto", "cond", "select")
GROUP_MAPS = ("auto", "vmap", "loop")


@dataclasses.dataclass(frozen=True)
class Parts:
    """A method resolved into what it is made of. The estimator branches on these, never on the
    method's name, so a method is its combination of parts (esam with beta = gamma = 1 has the
    parts of sam, plus its metrics)."""
    period: int  # a SAM step every `period` steps: k for sam_k, looksam, look_layersam; else 1
    reuses_g_v: bool  # LookSAM: SAM steps store g_v, the other steps add it back to g
    perturbation: str  # epsilon's form: "none", "sam" (rho g/||g||), "layer" (xi_l), "adaptive"
    swp: bool  # ESAM's SWP (beta < 1): epsilon from a random subset of the leaves of g
    sds: bool  # ESAM's SDS (gamma < 1): a forward pass at w + eps, then a subset's gradient
    reports_selection: bool  # ESAM at any beta, gamma: metrics selected_fraction and sharpness


def _kind(method: str) -> _Kind:
    if method not in _KINDS:
        raise ValueError(f"unknown sharpness-aware method {method!r}; choose one of {METHODS}")
    return _KINDS[method]


def resolve(method: str, k: int, beta: float, gamma: float, adaptive: bool) -> Parts:
    """The parts of `method` with these hyper-parameters (k is ignored by a method without one)."""
    kind = _kind(method)
    if not kind.perturbs:
        perturbation = "none"
    elif adaptive:  # ASAM's form replaces SAM's (make rejects it with LayerSAM's xi)
        perturbation = "adaptive"
    else:
        perturbation = "layer" if kind.layerwise else "sam"
    # beta = 1 keeps every leaf and gamma = 1 selects every example: both are then plain SAM.
    return Parts(period=k if kind.periodic else 1, reuses_g_v=kind.reuses_g_v,
                 perturbation=perturbation, swp=kind.esam and beta < 1, sds=kind.esam and gamma < 1,
                 reports_selection=kind.esam)


class EstimatorState(NamedTuple):
    step: jax.Array  # int32 global step t: counts every call, survives checkpoint/resume
    g_v: Any  # LookSAM's stored orthogonal component (a params-shaped pytree), else None
    drift: Any = None  # with drift_interval: the (g_s, g_h, g_v) snapshot of LookSAM Figure 2


class GradientOutput(NamedTuple):
    aux: Any  # aux of the clean pass (BatchNorm statistics come from there)
    metrics: dict  # scalar arrays
    # aux of the step's other training forwards, in the order they ran: SAM's pass at w + eps;
    # SDS's forward at w + eps, then its subset's pass. For a caller that updates model state from
    # every forward, as ESAM's official code does (its BatchNorm runs in train mode each time);
    # the spec's state comes from `aux` alone. Empty on plain steps and when the schedule is decided
    # in-graph (sam_step=None with a period > 1), whose branches must return the same structure.
    forward_aux: tuple = ()


@dataclasses.dataclass(frozen=True)
class Estimator:
    method: str
    rho: float = DEFAULTS["rho"]
    k: int = DEFAULTS["k"]
    alpha: float = DEFAULTS["alpha"]
    beta: float = DEFAULTS["beta"]
    gamma: float = DEFAULTS["gamma"]
    selection: str = DEFAULTS["selection"]  # SDS's rule for B+ (esam.SELECTIONS)
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
    # How m-sharpness groups run: "vmap", "loop" (unrolled, one group after the other), or "auto":
    # loop on CPU, vmap elsewhere (`_loops_over_groups`). The same values either way.
    group_map: str = "auto"
    # SWP (beta < 1): skip the dropped kernels' weight gradients in the clean backward instead of
    # zeroing them afterwards (swp_skip.py; the same update; meant for accelerators, slow on CPU).
    # The metrics grad_norm and cos_g_gs then see the kept tensors' clean gradient only.
    swp_skip: bool = False
    # Derived from the fields above on construction (so dataclasses.replace re-derives it too).
    parts: Parts = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "parts", resolve(self.method, self.k, self.beta, self.gamma,
                                                  self.adaptive))

    # ---- host-side schedule and cost -------------------------------------------------------
    @property
    def perturbs(self) -> bool:
        return self.parts.perturbation != "none"

    @property
    def period(self) -> int:
        return self.parts.period

    def is_sam_step(self, t: int) -> bool:
        """Whether global step t is a SAM step (a Python bool, decided on the host)."""
        return self.perturbs and int(t) % self.period == 0

    def passes(self, sam_step: bool) -> float:
        """Cost of one step in forward+backward passes (a forward alone counts 1/3)."""
        if not (sam_step and self.perturbs):
            return 1.0
        if self.parts.sds:  # the forward pass at w + eps is a third; the backward covers B+ only
            # subset_cosines: backward passes on B- at w + eps and on B+ at w, |B| examples in all
            return 1.0 + 1.0 / 3.0 + self.gamma + (1.0 if self.subset_cosines else 0.0)
        return 2.0

    @property
    def ideal_cost(self) -> float:
        """Mean passes per step over one period: the spec's ideal step-time ratio to `none`."""
        return (self.passes(True) + (self.period - 1) * self.passes(False)) / self.period

    # ---- state --------------------------------------------------------------------------
    def init(self, params) -> EstimatorState:
        g_v = otu.tree_zeros_like(params) if self.parts.reuses_g_v else None
        drift = diagnostics.empty_snapshot(params) if self.drift_interval else None
        return EstimatorState(step=jnp.zeros([], jnp.int32), g_v=g_v, drift=drift)

    # ---- the gradient -------------------------------------------------------------------
    def gradient(self, loss_fn, params, batch, state, rng=None, sam_step=None):
        """Returns (grads, new_state, GradientOutput(aux, metrics)).

        sam_step: static True/False compiles only that branch (the trainer decides on the host
        with `is_sam_step`); None decides in-graph from `state.step` (see `_in_graph`).
        """
        self._check_batch(batch)
        if self.parts.swp and rng is None:
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
        grads, g, g_v, (aux, forward_aux), metrics = step(loss_fn, params, batch, state.g_v, rng)
        drift = state.drift
        if self.drift_interval:  # every step is a SAM step here (checked by make)
            changes, drift = diagnostics.gradient_drift(g, grads, drift, state.step, self.drift_interval)
            metrics = {**metrics, **changes}
        return (grads, EstimatorState(state.step + 1, g_v, drift),
                GradientOutput(aux, metrics, forward_aux))

    def _in_graph(self, loss_fn, params, batch, state, rng):
        """Decides the SAM step from state.step inside the compiled graph.

        "cond" runs only the taken branch; "select" computes the SAM step every time and picks
        the reuse result from the same clean gradient (cost of a SAM step, but no control flow).
        "auto" selects on CPU, where a convolution's gradient inside a `lax.cond` branch ran far
        slower than outside one (docs/sharpness-aware.md, "The SAM-step schedule"), and uses
        `lax.cond` on accelerators, where it cost about what host dispatch does
        (docs/measurements.md, "One NVIDIA H100"; both from scripts/bench_methods.py).
        """
        is_sam = state.step % self.period == 0
        mode = self.in_graph
        if mode == "auto":
            mode = "select" if jax.default_backend() == "cpu" else "cond"
        if mode == "cond":
            def branch(sam_step):
                grads, new, out = self.gradient(loss_fn, params, batch, state, rng, sam_step=sam_step)
                return grads, new, out._replace(forward_aux=())

            return jax.lax.cond(is_sam, lambda: branch(True), lambda: branch(False))
        g_s, g, g_v, (aux, _), metrics = self._sam_step(loss_fn, params, batch, state.g_v, rng)
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
        if self.parts.reuses_g_v:
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

    # Both steps return (gradient for the optimizer, clean gradient g, g_v, (aux, forward_aux),
    # metrics).
    def _clean_step(self, loss_fn, params, batch, g_v, rng):
        """A step without a perturbation: `none`, or a reuse step of sam_k / LookSAM."""
        del rng
        g, losses, aux = self._over_groups(
            lambda est, w, b, size: batching.mean_grad(loss_fn, w, b, size), params, batch)
        grads = self._reuse(g, g_v)
        return grads, g, g_v, (aux, ()), self._metrics(g, grads, g_v, jnp.mean(losses), sam_step=False)

    def _reuse(self, g, g_v):
        return look.reuse(g, g_v, self.alpha) if self.parts.reuses_g_v else g

    def _sam_step(self, loss_fn, params, batch, g_v, rng):
        def group(est, w, b, size):
            return est._perturbed_gradients(loss_fn, w, b, rng, size)

        (g, g_s, cosines), (losses, sharpness, selected), aux = self._over_groups(group, params, batch)
        previous_g_v = g_v
        if self.parts.reuses_g_v:
            g_v = look.orthogonal_component(g, g_s)
        metrics = self._metrics(g, g_s, g_v, jnp.mean(losses), sam_step=True,
                                previous_g_v=previous_g_v)
        if self.parts.reports_selection:
            group_size = self.m or batching.batch_size(batch)
            count = esam.sds_count(self.gamma, group_size, self.selection) if self.parts.sds else group_size
            metrics["selected_fraction"] = jnp.float32(count / group_size)
            metrics["sharpness"] = jnp.mean(sharpness)
        if self.parts.sds:
            metrics.update(diagnostics.subset_losses(losses, sharpness, selected))  # ESAM Figure 5
            metrics.update(cosines)  # ESAM Figure 6 (subset_cosines): means over m-groups
        return g_s, g, g_v, aux, metrics

    def _perturbed_gradients(self, loss_fn, params, batch, rng, size):
        """On one group: ((g, g_s, cosines), (l_i(w), s_i, i selected), (aux, forward_aux)).

        ESAM's SDS when gamma < 1; `cosines` is {} unless `subset_cosines` (a dict of scalars,
        returned with the sums so that m-sharpness averages it over groups). `forward_aux`: the
        aux of the training forwards after the clean one, in order (GradientOutput.forward_aux).
        """
        mask = esam.swp_mask(rng, params, self.beta) if self.parts.swp else None
        with swp_skip.skipping(mask if self.swp_skip else None):
            g, losses, aux = batching.mean_grad(loss_fn, params, batch, size)
        perturbed = otu.tree_add(params, self._epsilon(params, g, mask))
        selected = jnp.ones(losses.shape, bool)
        cosines = {}
        if self.parts.sds:
            perturbed_losses, sharpness_aux = batching.forward_losses(loss_fn, perturbed, batch, size)
            sharpness = perturbed_losses - losses
            chosen, weights = esam.sds_select(sharpness, self.gamma, self.selection)
            selected = jnp.zeros(losses.shape, bool).at[chosen].set(weights > 0)
            g_s, _, subset_aux = batching.weighted_grad(loss_fn, perturbed, self._gather(batch, chosen),
                                                        weights, size)
            forward_aux = (sharpness_aux, subset_aux)
            if self.subset_cosines:
                def subset_grad(at, idx):
                    return batching.mean_grad(loss_fn, at, self._gather(batch, idx), size)[0]

                cosines = diagnostics.subset_cosines(subset_grad, params, perturbed, chosen,
                                                     selected, g, g_s, self.gamma)
        else:
            g_s, perturbed_losses, perturbed_aux = batching.mean_grad(loss_fn, perturbed, batch, size)
            sharpness = perturbed_losses - losses
            forward_aux = (perturbed_aux,)
        return (g, g_s, cosines), (losses, sharpness, selected), (aux, forward_aux)

    def _gather(self, batch, idx):
        return self._constrain(batching.take(batch, idx))

    def _constrain(self, batch):
        """A batch cut from the sharded one (a subset, a group), spread over the devices again:
        XLA would otherwise replicate it, and every device would compute all of it."""
        if self.batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, self.batch_sharding)
        return batch

    def _epsilon(self, params, g, mask):
        rho = self.rho
        if mask is not None:  # ESAM's SWP: the kept leaves of g, scaled as the official code does
            g = esam.apply_mask(mask, g)
            rho = rho / self.beta
        return _EPSILON[self.parts.perturbation](params, g, rho)

    def _over_groups(self, fn, params, batch):
        """fn(estimator, params, group_batch, microbatch) -> (sums, per_example, aux) over the whole
        batch (params passed, not closed over: shard_map differentiates them per device).

        m = None: one group, microbatched inside fn. m-sharpness: groups of m examples vmapped,
        `microbatch / m` groups per scanned chunk; sums become means over groups. With the batch
        sharded over several devices, each device runs its own groups (`_over_device_groups`).
        """
        if self.m is None:
            return fn(self, params, batch, self.microbatch)
        if self.microbatch is None and (self._loops_over_groups() or self._groups_span_devices(batch)):
            return _loop_groups(lambda b, size: fn(self, params, b, size), batching.split(batch, self.m),
                                self._constrain)
        if self._groups_per_device(batch):
            return self._over_device_groups(fn, params, batch)
        groups = batching.split(batch, self.m)  # [n / m, m, ...]: consecutive examples per group

        def chunk(gs):
            sums, per_example, aux = jax.vmap(lambda g: fn(self, params, g, None))(gs)
            return jax.tree.map(lambda x: x.sum(0), sums), per_example, batching.reduce_aux(aux)

        per_chunk = None if self.microbatch is None else self.microbatch // self.m
        sums, per_example, aux = batching.accumulate(chunk, groups, per_chunk)
        num_groups = batching.batch_size(groups)
        return otu.tree_scale(1.0 / num_groups, sums), batching.merge(per_example), aux

    def _device_share(self, batch) -> int | None:
        """Examples per device of a batch sharded over several devices (`batch_sharding`); None on
        one device."""
        s = self.batch_sharding
        devices = s.mesh.size if s is not None and hasattr(s, "mesh") else 1
        return batching.batch_size(batch) // devices if devices > 1 else None

    def _groups_per_device(self, batch) -> bool:
        """Whether each m-group lies on one device: m divides every device's share, no
        microbatching."""
        share = self._device_share(batch)
        return share is not None and self.microbatch is None and share % self.m == 0

    def _groups_span_devices(self, batch) -> bool:
        """Whether an m-group straddles devices (ESAM Table 2: m = 128 over 64 examples per device
        on 8 devices): then the groups run one after the other, each spread over the devices."""
        share = self._device_share(batch)
        return share is not None and share % self.m != 0

    def _over_device_groups(self, fn, params, batch):
        """`_over_groups` with each device vmapping its own groups (shard_map), then the groups'
        means averaged over the devices: the same groups (consecutive examples, and a device holds
        consecutive examples) and the same result. Vmapped over the whole sharded batch instead,
        each group's perturbed kernels make its convolutions grouped ones, which XLA's SPMD
        partitioner replicates: every device then computes every group (`reproduce plan`: SAM
        with m = 8 on 8 devices cost 11.3 plain steps, not 2; docs/plan.md)."""
        s = self.batch_sharding
        axis = s.spec[0]
        local = dataclasses.replace(self, batch_sharding=None, group_map="vmap")

        def per_device(w, b):
            sums, per_example, aux = local._over_groups(fn, w, b)
            mean = functools.partial(jax.lax.pmean, axis_name=axis)  # equal groups per device
            aux = jax.tree.map(lambda x: mean(x) if jnp.issubdtype(x.dtype, jnp.inexact) else x, aux)
            return jax.tree.map(mean, sums), per_example, aux

        # check_vma off: an integer aux leaf (a count) is the same on every device, not psummed
        return jax.shard_map(per_device, mesh=s.mesh, in_specs=(P(), P(axis)),
                             out_specs=(P(), P(axis), P()), check_vma=False)(params, batch)

    def _loops_over_groups(self) -> bool:
        """Whether m-groups run one after the other instead of vmapped: "auto" loops on CPU.

        Vmapped, each group's perturbed weights make the second pass's convolutions grouped ones
        (a batch of kernels), which XLA:CPU runs far slower: ESAM's code reading (m = 64, ResNet-18
        width 16, batch 128, 2 CPU devices) trained at 53 images/s against 112-170 for m = null
        (docs/measurements.md has the side-by-side step times, scripts/bench_methods.py)."""
        if self.group_map == "auto":
            return jax.default_backend() == "cpu"
        return self.group_map == "loop"

    def _check_batch(self, batch):
        n = batching.batch_size(batch)
        if self.m is not None and n % self.m:
            raise ValueError(f"m={self.m} must divide the per-step batch of {n} examples")
        if self.microbatch is not None and n % self.microbatch:
            raise ValueError(
                f"microbatch={self.microbatch} must divide the per-step batch of {n} examples")
        group = self.m or n
        if self.parts.sds and esam.sds_count(self.gamma, group, self.selection) < 1:
            raise ValueError(f"selection={self.selection!r} keeps int(gamma * n) - 1 = "
                             f"{esam.sds_count(self.gamma, group, self.selection)} of a group of {group} "
                             f"at gamma={self.gamma}: raise gamma or m, or use selection='ceil'")


def _loop_groups(fn, groups, constrain):
    """`_over_groups`'s result with the groups [g, m, ...] run one after the other, each spread
    over the devices by `constrain`; fn(group_batch, microbatch)."""
    parts = [fn(constrain(jax.tree.map(lambda x, i=i: x[i], groups)), None)
             for i in range(batching.batch_size(groups))]
    sums = jax.tree.map(lambda *xs: sum(xs), *[p[0] for p in parts])
    per_example = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[p[1] for p in parts])
    aux = batching.reduce_aux(jax.tree.map(lambda *xs: jnp.stack(xs), *[p[2] for p in parts]))
    return otu.tree_scale(1.0 / len(parts), sums), per_example, aux


_EPSILON = {"sam": perturb.sam_epsilon, "layer": perturb.layer_epsilon,
            "adaptive": perturb.adaptive_epsilon}


def make(method: str, **hparams) -> Estimator:
    """Builds a validated estimator: `make("looksam", rho=0.05, k=5, alpha=0.7)`.

    The estimator resolves the method into its `Parts` once, on construction.
    """
    kind = _kind(method)
    if "subset_cosines" in hparams and not kind.esam:
        raise ValueError(f"subset_cosines is ESAM's Figure 6 diagnostic (cosines of the SDS subsets' "
                         f"gradients): use it with method 'esam', not {method!r}")
    allowed = set(HPARAMS[method]) | {"microbatch", "in_graph", "batch_sharding", "group_map"}
    if kind.perturbs:
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
    if hp["drift_interval"] is not None and kind.periodic:
        raise ValueError(f"drift_interval measures SAM training (LookSAM Figure 2): use it with a "
                         f"method that perturbs every step (sam, layersam, esam), not {method}")
    if not isinstance(hp["adaptive"], bool):
        raise ValueError(f"adaptive must be True or False, got {hp['adaptive']!r}")
    if hp["adaptive"] and kind.layerwise:
        raise ValueError(f"adaptive=True does not combine with {method}'s layer-wise scaling xi: "
                         "use adaptive with sam, sam_k, looksam or esam")
    if hp["selection"] not in esam.SELECTIONS:
        raise ValueError(f"selection={hp['selection']!r}: choose one of {esam.SELECTIONS}")
    if hp["group_map"] not in GROUP_MAPS:
        raise ValueError(f"group_map={hp['group_map']!r}: choose one of {GROUP_MAPS}")
    if hp["in_graph"] not in IN_GRAPH:
        raise ValueError(f"in_graph={hp['in_graph']!r}: choose one of {IN_GRAPH}")
    m, mb = hp["m"], hp["microbatch"]
    if not isinstance(hp["subset_cosines"], bool):
        raise ValueError(f"subset_cosines must be True or False, got {hp['subset_cosines']!r}")
    if not isinstance(hp["swp_skip"], bool):
        raise ValueError(f"swp_skip must be True or False, got {hp['swp_skip']!r}")
    if hp["subset_cosines"] and hp["gamma"] >= 1:
        raise ValueError(f"subset_cosines needs gamma < 1 (got gamma={hp['gamma']!r}): with gamma "
                         "= 1 SDS selects the whole batch and there is no rejected subset B-")
    if hp["subset_cosines"] and m is not None and esam.sds_count(hp["gamma"], m, hp["selection"]) >= m:
        raise ValueError(f"subset_cosines needs a non-empty B- in each m-sharpness group: "
                         f"gamma={hp['gamma']!r} selects all of m={m} examples")
    if m is not None and mb is not None and mb % m:
        raise ValueError(f"microbatch={mb} must be a multiple of m={m}: each microbatch holds "
                         "whole m-sharpness groups")
    return Estimator(method=method, rho=float(hp["rho"]), k=int(hp["k"]),
                     alpha=float(hp["alpha"]), beta=float(hp["beta"]),
                     gamma=float(hp["gamma"]), selection=hp["selection"], adaptive=hp["adaptive"],
                     m=None if m is None else int(m), microbatch=None if mb is None else int(mb),
                     in_graph=hp["in_graph"], batch_sharding=hp["batch_sharding"],
                     drift_interval=hp["drift_interval"], subset_cosines=hp["subset_cosines"],
                     group_map=hp["group_map"], swp_skip=hp["swp_skip"])


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
