"""Training entry point: `python -m looksam.train [hydra overrides]` (or `looksam-train`).

    data -> model -> optax base optimizer -> sharpness-aware estimator -> two compiled steps -> loop

The loop decides SAM steps on the host (`est.is_sam_step`) and calls one of two compiled step
functions, so a LookSAM reuse step costs exactly one forward and backward pass. The batch is
sharded over a `data` mesh axis of every local device, parameters are replicated. The run leaves
TensorBoard events, wandb files, orbax checkpoints and `summary.json` in its workdir; a restart in
the same workdir resumes from the newest checkpoint (step, parameters, optimizer and estimator
state, data position, wandb run id), if it was written with the same config (run_identity.RESUMABLE
lists what may differ); a workdir holding another config's run is refused. The trainer knows
nothing about which method runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import logging
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import optax
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from looksam import checkpoint, config, distributed, host_devices, models, optim, run_identity, tracking
from looksam import summary as summary_file
from looksam.data import pipeline, synthetic
from looksam.hooks import Hooks, ReportProgress
from looksam.models import layers
from looksam.state import EvalMetrics, TrainState

log = logging.getLogger("looksam.train")


# Step metrics a run's history keeps beside train_loss (their mean over the last window before each
# evaluation), so committed summaries draw the figures without TensorBoard files: LookSAM's g_v drift
# between SAM steps (looksam/sam/estimator.py; the alpha sweep), and the figure diagnostics of
# looksam/sam/diagnostics.py (LookSAM Figure 2's grad_change_*, ESAM Figures 5 and 6's subset
# losses esam_loss_* and cosines esam_cos_*).
DRIFT_KEYS = ("g_v_cos_prev", "g_v_change")
HISTORY_PREFIXES = ("grad_change_", "esam_loss_", "esam_cos_")


def kept_in_history(key: str) -> bool:
    return key in DRIFT_KEYS or key.startswith(HISTORY_PREFIXES)


def code_version() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_loss_fn(model, batch_stats, dropout_key):
    """loss_fn(params, batch) -> (per-example losses, aux) for the estimator. BatchNorm statistics
    and the dropout key are closed over, so the clean and perturbed passes of a step share them."""
    def loss_fn(params, batch):
        variables = {"params": params}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
        logits, new = model.apply(variables, batch["image"], train=True, mutable=["batch_stats"],
                                  rngs={"dropout": dropout_key})
        labels = batch["label"]
        if labels.ndim == 1:
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            hits = jnp.argmax(logits, -1) == labels
        else:  # mixup / label smoothing
            losses = optax.softmax_cross_entropy(logits, labels)
            hits = jnp.argmax(logits, -1) == jnp.argmax(labels, -1)
        return losses, {"batch_stats": new.get("batch_stats"), "accuracy": hits.mean()}

    return loss_fn


def check_validation_split(cfg) -> None:
    """The validation split must be held out of training, or selecting on it would flatter."""
    train_split = cfg.data.train_split or pipeline.spec(cfg.data.name).train_split
    b = pipeline.builder(cfg.data.name, cfg.data.data_dir, download=cfg.data.download)
    shared = pipeline.shared_examples(b, train_split, cfg.data.validation_split)
    if shared:
        raise ValueError(f"data.validation_split={cfg.data.validation_split!r} shares {shared} "
                         f"examples with data.train_split={train_split!r}: hold the validation "
                         "examples out of training (e.g. train_split='train[:45000]', "
                         "validation_split='train[45000:]')")


def chain_batch_stats(before, updates, momentum=layers.BATCHNORM_MOMENTUM):
    """BatchNorm's running statistics after the forwards of `updates` in turn, each of which
    updated `before` alone: u_i = mu r0 + (1 - mu) b_i. Applied one after the other,
    r_i = mu r_{i-1} + (1 - mu) b_i = u_i + mu (r_{i-1} - r0), which needs no b_i."""
    chained = before
    for update in updates:
        chained = jax.tree.map(lambda u, r, r0: u + momentum * (r - r0), update, chained, before)
    return chained


def make_train_step(model, tx, est, schedule, root_key, batchnorm="clean"):
    """batchnorm (config.BATCHNORM_POLICIES): "clean" keeps the running statistics of the pass at w,
    "every_forward" those of every training forward of the step in turn (ESAM's official code)."""
    del tx  # the state's own (TrainState.tx, from initial_state): apply_gradients applies it

    def train_step(state: TrainState, batch, sam_step):
        # Keys come from (seed, step): restoring the step counter restores the randomness.
        step_key = jax.random.fold_in(root_key, state.step)
        dropout_key, sam_key = jax.random.split(step_key)
        loss_fn = make_loss_fn(model, state.batch_stats, dropout_key)
        grads, est_state, out = est.gradient(loss_fn, state.params, batch, state.est_state, sam_key,
                                             sam_step=sam_step)
        batch_stats = out.aux["batch_stats"]
        if batchnorm == "every_forward" and batch_stats is not None:
            batch_stats = chain_batch_stats(state.batch_stats, [batch_stats] + [
                aux["batch_stats"] for aux in out.forward_aux])
        new = state.apply_gradients(grads=grads, est_state=est_state, batch_stats=batch_stats)
        # The loss was computed before this update: `finite` vouches for the state a checkpoint of
        # this step would hold (optimizer moments can overflow while the parameters stay finite).
        metrics = dict(out.metrics, accuracy=out.aux["accuracy"], lr=schedule(state.step),
                       finite=all_finite(new))
        return new, metrics

    return train_step


def all_finite(tree):
    """Whether every float in tree is finite: exact (a global norm would overflow first), and one
    pass over the state per step, small beside the forward and backward passes."""
    checks = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def make_eval_step(model):
    def eval_step(params, batch_stats, batch) -> EvalMetrics:
        variables = {"params": params}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
        logits = model.apply(variables, batch["image"], train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return EvalMetrics.single_from_model_output(logits=logits, labels=batch["label"],
                                                    mask=batch["mask"], loss=loss)

    return eval_step


def evaluate(eval_step, state, batches, prefix: str = "test") -> dict[str, float]:
    total = functools.reduce(EvalMetrics.merge, (eval_step(state.params, state.batch_stats, batch)
                                                  for batch in batches))
    return {f"{prefix}_{k}": float(v) for k, v in total.compute().items()}


def _write_stderr(line: str):
    """Async-signal-safe: no Python-level buffer, so no reentrant write from a handler."""
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass


class PreemptionNotice:
    """True at the step where the job should checkpoint and exit because it is being preempted.

    One process: SIGTERM (a preemption, Kubernetes, `kill`), SIGUSR2 (submitit's notice ahead
    of a SLURM time limit) or SIGINT (Ctrl-C) sets a flag; after the checkpoint, `forward` hands
    the signal to the handler installed before ours (submitit's requeues the job) or exits with
    128 + signal (130 for Ctrl-C, without Python's KeyboardInterrupt traceback). A second Ctrl-C
    stops at once, keeping the last checkpoint.
    Several processes: JAX's preemption service catches SIGTERM and agrees with every process on
    one step (`reached_preemption_sync_point`), so all of them save the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self):
        self.multiprocess = jax.process_count() > 1
        self.signum: int | None = None
        self._logged = False
        self._previous: dict[int, Any] = {}
        if not self.multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}

    def _on_signal(self, signum, frame):
        # A handler runs between any two bytecodes, possibly inside a logging handler's flush of
        # the same file ("reentrant call inside BufferedWriter"): it only writes straight to fd 2
        # and sets the flag; the loop logs the notice when it next looks (`__call__`).
        del frame
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            _write_stderr("second Ctrl-C: stopping now; the last complete checkpoint is kept")
            os._exit(128 + signal.SIGINT)
        if signum == signal.SIGINT:
            _write_stderr("Ctrl-C: saving a checkpoint at the end of this step (again: stop at once)")
        self.signum = signum

    @property
    def reason(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else "a preemption notice"

    def __call__(self, step: int) -> bool:
        if self.multiprocess:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signum = signal.SIGTERM
        if self.signum is not None and not self._logged:
            self._logged = True
            log.warning("%s: saving a checkpoint at step %d", self.reason, step)
        return self.signum is not None

    def close(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def forward(self):
        """After the checkpoint: the previous handler's turn (it may requeue), else exit."""
        previous = self._previous.get(self.signum)
        # Python's own SIGINT handler raises KeyboardInterrupt: a traceback, not an exit code.
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.signum, None)
        raise SystemExit(128 + (self.signum or signal.SIGTERM))


def base_optimizer(cfg, steps_per_epoch: int, epoch_steps: int):
    """(schedule, optax transformation): the lr follows the linear rule from base_batch."""
    o, sched = cfg.optimizer, cfg.schedule
    lr = o.lr * (cfg.trainer.batch_size / o.base_batch if o.base_batch else 1.0)
    warmup = (sched.warmup_steps if sched.warmup_steps is not None
              else round(sched.warmup_epochs * steps_per_epoch))
    schedule = optim.schedule(lr, epoch_steps, min(warmup, epoch_steps), sched.decay,
                              sched.init_lr, sched.end_lr)
    tx = optim.optimizer(o.name, schedule, momentum=o.momentum, nesterov=o.nesterov,
                         weight_decay=o.weight_decay, b1=o.b1, b2=o.b2, eps=o.eps,
                         clip_norm=o.clip_norm, weight_decay_mask=o.weight_decay_mask)
    return schedule, tx


def model_and_optimizer(cfg, ds_spec, steps_per_epoch: int):
    """(model, lr schedule, optax transformation) of a run whose epoch is steps_per_epoch steps."""
    model = models.create(cfg.model.name, num_classes=ds_spec.num_classes,
                          dtype=jnp.dtype(cfg.model.dtype), **cfg.model.kwargs)
    schedule, tx = base_optimizer(cfg, steps_per_epoch, math.ceil(cfg.trainer.epochs * steps_per_epoch))
    return model, schedule, tx


def initial_state(model, tx, est, image_size: int, root_key) -> TrainState:
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, image_size, image_size, 3)),
                                             train=False))(jax.random.fold_in(root_key, 2**31 - 1))
    params = variables["params"]
    # Not TrainState.create: its step is a Python 0, this one an int32 array as est_state.step is.
    return TrainState(step=jnp.zeros([], jnp.int32), apply_fn=model.apply, params=params, tx=tx,
                      opt_state=tx.init(params), est_state=est.init(params),
                      batch_stats=variables.get("batch_stats"))


def batch_shape(cfg, ds_spec, sharding) -> dict:
    """The global training batch, abstract: labels are one-hot rows once mixup or smoothing is on."""
    n, size = cfg.trainer.batch_size, ds_spec.image_size
    soft = cfg.data.mixup_alpha > 0 or cfg.data.label_smoothing > 0
    label = ((n, ds_spec.num_classes), jnp.float32) if soft else ((n,), jnp.int32)
    return {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32, sharding=sharding),
            "label": jax.ShapeDtypeStruct(*label, sharding=sharding)}


def compile_steps(train_step, est, state, batch, compiler_options=None) -> dict:
    """One compiled step per branch the schedule takes ({False, True} for LookSAM-k): the host
    picks the branch, so a reuse step runs exactly one forward and backward pass. state and batch
    may be abstract (jax.ShapeDtypeStruct); compiler_options go to XLA (looksam/plan.py's)."""
    branches = sorted({est.is_sam_step(s) for s in range(est.period)})
    return {branch: jax.jit(functools.partial(train_step, sam_step=branch), donate_argnums=0)
            .lower(state, batch).compile(compiler_options) for branch in branches}


def run(cfg, workdir: str, hooks: Sequence = ()) -> dict:
    """Trains cfg (a composed DictConfig) in workdir; returns the summary also written there.
    `hooks`: periodic actions beside the progress report (looksam/hooks.py), e.g. clu's Profile."""
    cfg = config.scaled_config(cfg)
    est = config.validated_estimator(cfg)  # every check before any compilation
    host_devices.configure(cfg.trainer)  # before JAX starts: split the batch over the CPU cores
    distributed.initialize(cfg.distributed)  # before anything touches a JAX backend
    if not distributed.is_main():  # one process speaks for the run
        logging.getLogger("looksam").setLevel(logging.WARNING)
    return _train(cfg, est, workdir, hooks)


def make_mesh(t):
    """(devices, replicated, sharded): the `data` mesh over the devices this run trains on."""
    if t.num_devices and jax.process_count() > 1:
        raise ValueError("trainer.num_devices picks local devices of a one-process run; with "
                         f"{jax.process_count()} processes leave it null (every device of every process)")
    if t.num_devices and t.num_devices > jax.local_device_count():
        raise ValueError(f"trainer.num_devices={t.num_devices}: this process has "
                         f"{jax.local_device_count()} {jax.devices()[0].platform} device(s); choose "
                         f"1 to {jax.local_device_count()}, or null for all of them")
    devices = jax.devices()[: t.num_devices] if t.num_devices else jax.devices()
    if t.batch_size % len(devices):
        raise ValueError(f"trainer.batch_size={t.batch_size} must divide over the {len(devices)} devices "
                         f"of {jax.process_count()} process(es)")
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
    return devices, NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def check_resumable(ckpt, resolved: dict, workdir: str) -> Mapping:
    """The finished summary in workdir ({} without one), after checking that it and the newest
    checkpoint are this config's: a sweep sharing one workdir must not mix runs or hand every job
    the first one's result."""
    latest = ckpt.latest_step()
    if latest is not None:
        run_identity.check_same_run(ckpt.extra(latest).get("config"), resolved,
                                    f"checkpoint step {latest}", workdir)
    finished = summary_file.read(workdir) or {}
    if finished.get("status") not in (None, "failed"):  # a failure's config may be unresolved
        run_identity.check_same_run(finished.get("config"), resolved, "summary.json", workdir)
    return finished


@dataclasses.dataclass
class Inputs:
    """The run's batch streams, on device: TFDS + tf.data, or numpy under data.mock (no
    TensorFlow needed: looksam/data/synthetic.py)."""
    cfg: Any
    sharding: Any

    def __post_init__(self):
        d = self.cfg.data
        self.spec = pipeline.spec(d.name)
        self.tfds_kw = dict(directory=d.data_dir, download=d.download,
                            synthetic=d.mock_examples if d.mock else None)
        self.mock_kw = dict(image_size=self.spec.image_size, num_classes=self.spec.num_classes,
                            process_index=jax.process_index(), process_count=jax.process_count())

    def steps_per_epoch(self) -> int:
        return max(pipeline.steps_per_epoch(self.cfg.data.name, self.cfg.trainer.batch_size,
                                            split=self.cfg.data.train_split, **self.tfds_kw), 1)

    def train(self, start_step: int):
        d, t = self.cfg.data, self.cfg.trainer
        if d.mock:
            batches = synthetic.train_batches(
                d.mock_examples, global_batch=t.batch_size, seed=t.seed, start_step=start_step,
                mixup_alpha=d.mixup_alpha, label_smoothing=d.label_smoothing,
                split=d.train_split or self.spec.train_split, **self.mock_kw)
        else:
            batches = pipeline.as_numpy(pipeline.train_dataset(
                d.name, global_batch=t.batch_size, seed=t.seed, split=d.train_split,
                randaugment=tuple(d.randaugment) if d.randaugment else None,
                cutout=(d.cutout, d.cutout_probability) if d.cutout else None,
                mixup_alpha=d.mixup_alpha, label_smoothing=d.label_smoothing,
                shuffle_buffer=d.shuffle_buffer, start_step=start_step, shards=d.input_shards,
                **self.tfds_kw))
        return pipeline.prefetch_to_devices(batches, self.sharding)

    def eval_batch_size(self) -> int:
        """trainer.eval_batch_size rounded up to a multiple of the devices: the last batch is
        padded and masked anyway, so the size changes nothing computed (2,048 chips, the LookSAM
        64k runs' slice, and the default 1,024 make one batch of 2,048)."""
        n = self.sharding.mesh.size
        return -(-self.cfg.trainer.eval_batch_size // n) * n

    def eval(self, split: str | None):
        d = self.cfg.data
        if d.mock:
            batches = synthetic.eval_batches(d.mock_examples, global_batch=self.eval_batch_size(),
                                             split=split or self.spec.eval_split, **self.mock_kw)
        else:
            batches = pipeline.as_numpy(pipeline.eval_dataset(
                d.name, global_batch=self.eval_batch_size(), split=split, **self.tfds_kw))
        return pipeline.prefetch_to_devices(batches, self.sharding)


class MetricsWindow:
    """The step metrics since the last host sync, fetched together (one device_get per window,
    not per step), and the wall time of the training steps between syncs (input included
    but for its start; compilation, evaluation and checkpointing left out), for images/s."""

    def __init__(self, tracker, total_steps: int, batch_size: int, nan_policy: str, train_loss=None):
        self.tracker, self.total_steps, self.batch_size = tracker, total_steps, batch_size
        self.nan_policy = nan_policy
        self.pending: list[dict] = []
        self.train_loss = train_loss
        self.history_means: dict[str, float] = {}  # kept_in_history's metrics, last window
        self.seconds, self.timed_steps, self._steps = 0.0, 0, 0
        self._start = time.perf_counter()

    def add(self, metrics) -> None:
        self.pending.append(metrics)
        self._steps += 1

    def stop_clock(self) -> None:
        """At a sync point (after block_until_ready): the steps since the last one are timed."""
        self.seconds += time.perf_counter() - self._start
        self.timed_steps += self._steps
        self._steps = 0

    def start_clock(self) -> None:
        self._start = time.perf_counter()

    @property
    def images_per_sec(self) -> float | None:
        return self.timed_steps * self.batch_size / self.seconds if self.seconds else None

    def _line(self, step: int, loss: float, accuracy: float, rate: float) -> None:
        eta = (self.total_steps - step) * self.batch_size / rate if rate else float("nan")
        log.info("step %d/%d  loss %.4f  accuracy %.4f  %.1f images/s  ETA %.1f min", step,
                 self.total_steps, loss, accuracy, rate, eta / 60)

    def progress_line(self, step: int) -> None:
        """The console line of the steps since the last flush, leaving the window open."""
        if not self.pending:
            return
        window = jax.device_get(self.pending)
        seconds = self.seconds + time.perf_counter() - self._start
        rate = (self.timed_steps + self._steps) * self.batch_size / seconds if seconds else 0.0
        self._line(step, float(np.nanmean([m["loss"] for m in window])),
                   float(np.nanmean([m["accuracy"] for m in window])), rate)

    def flush(self, step: int) -> int | None:
        """Logs the window's means; returns the first step whose loss or new state was not finite
        (None if all were, or under nan_policy=ignore)."""
        if not self.pending:
            return None
        window, self.pending = jax.device_get(self.pending), []
        finite = np.array([bool(m.pop("finite")) and np.isfinite(m["loss"]) for m in window])
        if not finite.all() and self.nan_policy == "stop":
            return step - len(window) + 1 + int(np.argmin(finite))
        # NaN marks "not measured this step" (diagnostics taken every few steps).
        means = {k: float(np.nanmean(v)) for k in window[0]
                 if not np.isnan(v := np.array([m[k] for m in window], np.float64)).all()}
        sam_rows = [m for m in window if m["sam_step"] == 1.0]
        for key in ("cos_g_gs", "g_v_norm", "sharpness", "selected_fraction"):
            if sam_rows and key in sam_rows[0]:
                means[f"sam_{key}"] = float(np.mean([m[key] for m in sam_rows]))
        self.train_loss = means["loss"]
        self.history_means.update({k: v for k, v in means.items() if kept_in_history(k)})
        rate = self.images_per_sec or 0.0
        eta = (self.total_steps - step) * self.batch_size / rate if rate else float("nan")
        self.tracker.scalars(step, {f"train_{k}": v for k, v in means.items()}
                             | {"images_per_sec": rate, "eta_minutes": eta / 60})
        self._line(step, means["loss"], means["accuracy"], rate)
        return None


@dataclasses.dataclass
class Progress:
    """What a run has measured so far, carried in every checkpoint so a resumed run goes on."""
    counters: dict = dataclasses.field(
        default_factory=lambda: {"sam_steps": 0, "reuse_steps": 0, "passes": 0.0})
    best_test_accuracy: float | None = None
    best_validation_accuracy: float | None = None
    history: list = dataclasses.field(default_factory=list)  # one row per evaluation
    last_eval: dict = dataclasses.field(default_factory=dict)
    # The run's wall time in the processes before this one, each up to its last checkpoint, so
    # that a resumed run's total_seconds is the whole run's (a cost budget sums them).
    wall_seconds: float = 0.0

    def __post_init__(self):
        self.started = time.perf_counter()  # not a field: not checkpointed

    @classmethod
    def from_checkpoint(cls, extra: dict, started: float) -> Progress:
        """`started`: this process's time.perf_counter() at its start."""
        progress = cls(**{f.name: extra[f.name] for f in dataclasses.fields(cls) if f.name in extra})
        progress.started = started
        return progress

    def seconds(self) -> float:
        """The run's wall time so far, earlier processes included."""
        return self.wall_seconds + time.perf_counter() - self.started

    def count(self, est, sam_step: bool) -> None:
        self.counters["sam_steps" if sam_step else "reuse_steps"] += 1
        self.counters["passes"] += est.passes(sam_step)

    def record_eval(self, step: int, epoch: float, results: dict, window: MetricsWindow) -> dict:
        """Keeps an evaluation's results; returns the best accuracies so far."""
        self.last_eval = results
        self.best_test_accuracy = max(self.best_test_accuracy or 0.0, results["test_accuracy"])
        bests = {"best_test_accuracy": self.best_test_accuracy}
        if "validation_accuracy" in results:
            self.best_validation_accuracy = max(self.best_validation_accuracy or 0.0,
                                                results["validation_accuracy"])
            bests["best_validation_accuracy"] = self.best_validation_accuracy
        self.history.append({"step": step, "epoch": epoch, "train_loss": window.train_loss}
                            | window.history_means | results)
        log.info("eval at step %d (epoch %.2f): test accuracy %.2f%%, test loss %.4f, best %.2f%%%s",
                 step, epoch, 100 * results["test_accuracy"], results["test_loss"],
                 100 * self.best_test_accuracy,
                 f", validation accuracy {100 * results['validation_accuracy']:.2f}%"
                 if "validation_accuracy" in results else "")
        return bests


def run_summary(cfg, resolved, est, *, status, message, step, total_steps, steps_per_epoch,
                progress: Progress, window: MetricsWindow, devices, compile_s, t_start,
                wandb_id) -> dict:
    last = progress.last_eval
    ips = window.images_per_sec
    return {
        "config": resolved, "table": cfg.table, "cell": cfg.cell, "reading": cfg.reading,
        "seed": cfg.trainer.seed,
        "status": status, "message": message, "step": step, "total_steps": total_steps,
        "epochs": step / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"), "best_test_accuracy": progress.best_test_accuracy,
        "final_validation_accuracy": last.get("validation_accuracy"),
        "best_validation_accuracy": progress.best_validation_accuracy,
        "final_train_loss": window.train_loss, "history": progress.history,
        "images_per_sec": ips,
        "images_per_sec_per_device": ips / len(devices) if ips else None,
        "seconds_per_epoch": (steps_per_epoch * window.seconds / window.timed_steps
                              if window.timed_steps else None),
        "compile_seconds": compile_s, "total_seconds": progress.seconds(),
        "process_seconds": time.perf_counter() - t_start,
        "cost": dict(progress.counters, ideal_cost=est.ideal_cost),
        "hardware": environment(devices),
        "code_version": code_version(), "wandb_id": wandb_id,
    }


def write_summary(workdir: str, summary: dict) -> None:
    if jax.process_index() == 0:
        summary_file.write(workdir, summary)


def restore_or_init(ckpt, state, sharding, workdir: str):
    """(state, step, checkpoint extra): the newest checkpoint's, else the fresh state's at step 0."""
    state, step, extra = jax.device_put(state, sharding), ckpt.latest_step() or 0, {}
    if step:
        state, extra = ckpt.restore(step, state)
        log.info("resuming from step %d in %s", step, workdir)
    ckpt.check_space(state)
    return state, step, extra


def make_tracker(cfg, workdir: str, resolved: dict, resume_id: str | None):
    lg = cfg.logger
    tracker = tracking.Tracker(
        workdir, resolved, mode=lg.wandb_mode, project=lg.project, entity=lg.entity,
        group=lg.group, tags=list(lg.tags), name=lg.name, resume_id=resume_id,
        tensorboard=lg.tensorboard, is_main=jax.process_index() == 0)
    tracker.hparams(run_identity.flatten(resolved))
    return tracker


def evaluate_splits(eval_step, state, inputs: Inputs) -> dict[str, float]:
    """The test split's accuracy and loss, and the validation split's when there is one."""
    d = inputs.cfg.data
    results = evaluate(eval_step, state, inputs.eval(d.eval_split))
    if d.validation_split:
        results |= evaluate(eval_step, state, inputs.eval(d.validation_split), prefix="validation")
    return results


PROGRESS_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Loop:
    """What a process's training loop runs with, fixed for the run: the compiled branches and the
    estimator that picks one per step, when to log, evaluate and checkpoint, and where it goes."""
    est: Any
    steps: dict  # compiled branch per est.is_sam_step(step)
    evaluate: Callable  # state -> {"test_accuracy": ..., ...}
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    log_every: int
    checkpoint_every: int
    window: MetricsWindow
    progress: Progress
    ckpt: checkpoint.Checkpointer
    tracker: Any
    preempted: PreemptionNotice
    resolved: dict  # the config, recorded in every checkpoint


def train_loop(loop: Loop, state, step: int, batches, hooks: Hooks) -> tuple[str, str, int]:
    """Steps from `step` to total_steps (host dispatch of the compiled branch est.is_sam_step
    picks; `hooks` after each step and around each phase); at each sync point logs the metrics
    window, evaluates and checkpoints when due. Returns (status, message, the last step):
    completed, diverged or preempted."""
    window, progress, ckpt = loop.window, loop.progress, loop.ckpt
    status, message = "completed", ""
    started = False
    last_line = time.monotonic()
    while step < loop.total_steps:
        with hooks.timed("next"):
            batch = next(batches)
        if not started:  # the input's start (a shuffle buffer filling) is not a training step's time
            window.start_clock()
            started = True
        sam_step = loop.est.is_sam_step(step)
        with hooks.timed("sam_step" if sam_step else "plain_step"):
            state, metrics = loop.steps[sam_step](state, batch)
        window.add(metrics)
        progress.count(loop.est, sam_step)
        step += 1
        with hooks.timed("hooks"):
            hooks(step)
        stopping = loop.preempted(step)
        log_now = step % loop.log_every == 0 or step == loop.total_steps or stopping
        due_ckpt = step % loop.checkpoint_every == 0 or step == loop.total_steps or stopping
        due_eval = (step % loop.eval_every == 0 or step == loop.total_steps) and not stopping
        if not (log_now or due_ckpt or due_eval):
            # At least a line every PROGRESS_SECONDS: slow steps (2 CPU cores, a paper-size model)
            # would otherwise leave minutes of silence. The window goes on: what it records (the
            # summary's train loss, the tracker's scalars) does not depend on the clock.
            if time.monotonic() - last_line >= PROGRESS_SECONDS:
                window.progress_line(step)
                last_line = time.monotonic()
            continue
        with hooks.timed("sync"):
            jax.block_until_ready(state)
            window.stop_clock()
        with hooks.timed("flush"):
            bad_step = window.flush(step) if log_now or due_ckpt else None
        last_line = time.monotonic() if log_now else last_line
        if bad_step is not None:  # checked before this step's checkpoint could be saved
            ckpt.wait()  # the save in flight is a good one: name it
            status, message = "diverged", (f"non-finite training loss or state at step {bad_step}; "
                                           f"the last good checkpoint (step {ckpt.latest_step()}) is kept")
            log.error(message)
            break
        if due_eval:
            with hooks.timed("eval"):
                results = loop.evaluate(state)
            loop.tracker.scalars(step, results | progress.record_eval(step, step / loop.steps_per_epoch,
                                                                      results, window))
        if due_ckpt:
            with hooks.timed("checkpoint"):
                ckpt.save(step, state, dataclasses.asdict(progress) | {
                    "step": step, "wandb_id": loop.tracker.run_id, "train_loss": window.train_loss,
                    "wall_seconds": progress.seconds(), "config": loop.resolved},
                    force=step == loop.total_steps or stopping)
        if stopping:
            status, message = "preempted", (f"stopped by {loop.preempted.reason} after step {step} and "
                                            "checkpointed; rerun the same command to resume: "
                                            + resume_command())
            log.warning(message)
            break
        window.start_clock()
    return status, message, step


def resume_command() -> str:
    """The command line this process runs, to be run again (a table driver prints its own)."""
    return shlex.join(["python", "-m", "looksam.train", *sys.argv[1:]])


def _train(cfg, est, workdir: str, extra_hooks: Sequence = ()) -> dict:
    t_start, t = time.perf_counter(), cfg.trainer
    devices, replicated, sharded = make_mesh(t)
    log.info("training on %d %s device(s) of %d process(es); XLA_FLAGS=%r", len(devices),
             devices[0].platform, jax.process_count(), os.environ.get("XLA_FLAGS", ""))
    if cfg.data.validation_split and not cfg.data.mock:
        check_validation_split(cfg)
    os.makedirs(workdir, exist_ok=True)
    resolved = run_identity.resolved(cfg)
    inputs = Inputs(cfg, sharded)
    with contextlib.ExitStack() as stack:
        ckpt = stack.enter_context(checkpoint.Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
            every_steps=t.checkpoint_every_steps))
        finished = check_resumable(ckpt, resolved, workdir)
        steps_per_epoch = inputs.steps_per_epoch()
        epoch_steps = math.ceil(t.epochs * steps_per_epoch)  # the schedule's length
        total_steps = min(epoch_steps, t.max_steps or epoch_steps)
        eval_every = max(1, round(t.eval_every_epochs * steps_per_epoch))
        if finished.get("status") == "completed" and finished.get("step", -1) >= total_steps:
            log.info("%s already completed %d steps; nothing to do", workdir, finished["step"])
            return dict(finished)

        model, schedule, tx = model_and_optimizer(cfg, inputs.spec, steps_per_epoch)
        root_key = jax.random.key(t.seed)
        state, step, extra = restore_or_init(ckpt, initial_state(
            model, tx, est, inputs.spec.image_size, root_key), replicated, workdir)
        tracker = stack.enter_context(make_tracker(cfg, workdir, resolved, extra.get("wandb_id")))
        # clu's progress report (steps/s, ETA, the time share of eval and checkpointing) and the caller's.
        hooks = Hooks([ReportProgress(tracking.progress_report(tracker.writer, total_steps,
                                                               t.log_every_steps)), *extra_hooks])
        est = dataclasses.replace(est, batch_sharding=sharded)
        t0 = time.perf_counter()
        steps = compile_steps(make_train_step(model, tx, est, schedule, root_key, cfg.sam.batchnorm),
                              est, state, batch_shape(cfg, inputs.spec, sharded))
        compile_s = time.perf_counter() - t0
        log.info("compiled %d train step function(s) in %.1f s", len(steps), compile_s)
        tracker.scalars(step, {"compile_seconds": compile_s})
        eval_step = jax.jit(make_eval_step(model))
        progress = Progress.from_checkpoint(extra, started=t_start)
        window = MetricsWindow(tracker, total_steps, t.batch_size, t.nan_policy, extra.get("train_loss"))
        preempted = PreemptionNotice()
        stack.callback(preempted.close)
        loop = Loop(
            est=est, steps=steps, evaluate=functools.partial(evaluate_splits, eval_step, inputs=inputs),
            total_steps=total_steps, steps_per_epoch=steps_per_epoch, eval_every=eval_every,
            log_every=t.log_every_steps, checkpoint_every=t.checkpoint_every_steps, window=window,
            progress=progress, ckpt=ckpt, tracker=tracker, preempted=preempted, resolved=resolved)
        with hooks.timed("input"):
            batches = inputs.train(step)
        status, message, step = train_loop(loop, state, step, batches, hooks)
        ckpt.wait()
        summary = run_summary(cfg, resolved, est, status=status, message=message, step=step,
                              total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                              progress=progress, window=window, devices=devices,
                              compile_s=compile_s, t_start=t_start, wandb_id=tracker.run_id)
        tracker.summary({k: v for k, v in summary.items() if k not in ("config", "history")})
        tracker.finish(status)
    write_summary(workdir, summary)
    if status == "preempted":  # the job is going away: end it (and a sweep with it)
        preempted.forward()
    return summary


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(devices) -> dict:
    """What a run ran on, for comparing its images/s with another's."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"device_kind": devices[0].device_kind, "platform": devices[0].platform,
            "device_count": len(devices), "process_count": jax.process_count(),
            "cpu_model": cpu_model(), "cpu_cores": host_devices.available_cores(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "versions": {n: version(n) for n in ("jax", "jaxlib", "flax", "optax")}}


def write_failure(workdir: str, cfg, error: BaseException) -> None:
    """A failed run still leaves a summary (results/ marks the cell failed); nothing else is touched.
    A workdir holding another config's run is not this run's, and a completed run's result outlives
    a failed rerun (e.g. one pointed at a wrong data_dir): those summaries stay as they are."""
    previous = summary_file.read(workdir)
    if isinstance(error, run_identity.ConfigMismatch) or (previous and previous.status == "completed"):
        return
    try:
        resolved = run_identity.resolved(cfg)
    except Exception:  # noqa: BLE001 - the config itself may be what failed
        resolved = None
    with contextlib.suppress(OSError):
        os.makedirs(workdir, exist_ok=True)
        summary_file.write(workdir, {"config": resolved, "status": "failed",
                                     "message": f"{type(error).__name__}: {error}",
                                     "code_version": code_version()})


VERBOSE = "LOOKSAM_VERBOSE"  # set (e.g. LOOKSAM_VERBOSE=1): keep the native libraries' start-up lines


def quiet_start() -> None:
    """Imports TensorFlow (when installed) with the process's stderr pointed at /dev/null, and
    lowers JAX's backend probe to warnings: their start-up lines (oneDNN's notice, absl's "All log
    messages before absl::InitializeLog()", "Unable to initialize backend 'tpu'") come before
    anything of ours on every run and say nothing about it. $LOOKSAM_VERBOSE keeps them. A failing
    import still raises, after stderr is back."""
    if os.environ.get(VERBOSE):
        return
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.suppress(ImportError):  # the synthetic-data path runs without it
            import tensorflow  # noqa: F401
        # Not the backend: host_devices.configure must set the CPU device count before it starts.
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main() -> None:
    config.register()
    quiet_start()

    # An absolute path: the console script and `python -m` work from any directory.
    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")

    @hydra.main(config_path=os.path.normpath(configs), config_name="config", version_base="1.3")
    def hydra_main(cfg) -> float | None:
        """Returns what a sweeper maximises (hydra/sweeper=optuna_accuracy): the best test accuracy
        of a completed run. Any other run returns None, and in a multirun an exception is logged,
        not raised, so the sweep goes on: the basic and submitit launchers ignore the value, and
        the optuna plugin records None as a failed trial ("Return value must be float-castable")
        and carries on. Not NaN: the plugin then tells optuna FAIL together with the NaN value,
        which optuna 2.x rejects, and the whole study stops."""
        # Our progress line says what matters; orbax and clu's absl INFO lines would drown it. Set
        # here, not in main(): a submitit job runs this function alone, in a process of its own.
        logging.getLogger("absl").setLevel(logging.WARNING)
        if not os.environ.get(VERBOSE):  # Hydra's logging setup ran after quiet_start
            logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        workdir = cfg.trainer.workdir or HydraConfig.get().runtime.output_dir
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        for warning in config.ignored_sam_settings(cfg, HydraConfig.get().overrides.task):
            log.warning(warning)
        try:
            summary = run(cfg, workdir)
        except (ValueError, FileNotFoundError) as e:  # bad config or missing data: say so plainly
            write_failure(workdir, cfg, e)
            if multirun:
                log.error("run failed: %s (the sweep goes on)", e)
                return None
            raise SystemExit(f"error: {e}") from None
        except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save yet
            log.warning("interrupted before the first training step: nothing was saved")
            raise SystemExit(128 + signal.SIGINT) from None
        except Exception as e:
            write_failure(workdir, cfg, e)
            if multirun:
                log.exception("run failed; the sweep goes on")  # its summary says status failed
                return None
            raise
        best = summary.get("best_test_accuracy")
        # Diverged (or preempted) runs are failed trials, whatever they reached before; so is a
        # run that never evaluated.
        if summary.get("status") != "completed" or best is None or not math.isfinite(best):
            return None
        return float(best)

    hydra_main()


if __name__ == "__main__":
    main()
