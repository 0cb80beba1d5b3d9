"""Experiment tracking: clu metric writers (console + TensorBoard) and Weights & Biases.

A run's wandb identity follows from its config (`run_labels`): a table's cell run by `python -m
reproduce run` is grouped `<table>/<scale>[/<reading>]`, its job type is the cell, its name
`<cell>/seed<k>`, and its tags name the scale, model, method and base optimizer (docs/wandb.md).
wandb's own console lines (banner, run history, sync hints: some 20 to 35 a job) are off unless
LOOKSAM_VERBOSE=1 or WANDB_SILENT is set; an offline run logs one line with its `wandb sync` command.

Tracking must never end a training run: a wandb run that cannot start (no network, no key) is
logged as a warning and the job goes on with TensorBoard and the console. Only the main process
writes TensorBoard files and owns the wandb run; the others log to their console. clu's writers
and progress report need TensorFlow (its package imports the TF summary writer); where it is not
installed (an accelerator machine with JAX only) a run goes on with console logging, without
TensorBoard files or clu's steps/s scalars, and says so once.

    with tracking.Tracker(workdir, config, mode=None, project="looksam", ...) as tracker:
        tracker.scalars(step, {"train/loss": loss})
        ...
        tracker.finish("completed")      # an escaping exception finishes the run as "failed"
"""

from __future__ import annotations

import contextlib
import functools
import logging as std_logging
import netrc
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from absl import logging

MODES = ("online", "offline", "disabled")
VERBOSE_ENV = "LOOKSAM_VERBOSE"  # 1: wandb prints its banner, run history and sync hints again
# The config keys a run's tags name, as <tag prefix>:<value> (e.g. method:looksam).
TAG_KEYS = (("scale", "scale.name"), ("model", "model.name"), ("method", "sam.method"),
            ("optimizer", "optimizer.name"))


def wandb_mode(configured: str | None) -> str:
    """`configured`, else $WANDB_MODE, else online when a W&B API key is configured, else offline."""
    if configured is not None:
        if configured not in MODES:
            raise ValueError(f"wandb mode {configured!r}: choose one of {MODES} or None (automatic)")
        return configured
    if os.environ.get("WANDB_MODE") in MODES:
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    """Where `wandb login` leaves the key: $WANDB_API_KEY, or the netrc entry of the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
        path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
        return os.path.isfile(path) and bool((netrc.netrc(path).authenticators(host) or (0, 0, ""))[2])
    except Exception as e:  # An unreadable netrc means no key, not a crashed job.
        logging.warning("Could not read a W&B key from netrc: %s", e)
        return False


def group_name(table: str, scale: str, reading: str | None = None) -> str:
    """The wandb group of a table's runs at a scale: <table>/<scale>, and <table>/<scale>/<reading>
    for a reading other than the paper's (None)."""
    return "/".join(part for part in (table, scale, reading) if part)


def _lookup(config: Mapping, dotted: str):
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def run_labels(config: Mapping) -> dict[str, Any]:
    """The wandb group, name, job type and tags a run's resolved config implies.

    A table's cell (config `table` and `cell`, set by `python -m reproduce run`): group
    `group_name(table, scale.name, reading)`, job type the cell id (`row/column`), name
    `<cell>[/<variant>]/seed<k>`. Any run: tags `scale:<scale.name>`, `model:<model.name>`,
    `method:<sam.method>`, `optimizer:<optimizer.name>` (those it has). None where it has none.
    """
    table, cell = _lookup(config, "table"), _lookup(config, "cell")
    scale, seed = _lookup(config, "scale.name"), _lookup(config, "trainer.seed")
    variant = _lookup(config, "variant")
    labels: dict[str, Any] = {"group": None, "name": None, "job_type": None}
    if table and cell:
        labels["group"] = group_name(str(table), str(scale or "paper"), _lookup(config, "reading"))
        labels["job_type"] = str(cell)
        labels["name"] = "/".join(str(p) for p in (cell, variant) if p) + (
            f"/seed{seed}" if seed is not None else "")
    labels["tags"] = [f"{prefix}:{value}" for prefix, key in TAG_KEYS
                      if (value := _lookup(config, key)) not in (None, "")]
    return labels


def wandb_settings():
    """wandb.Settings that keep its console chatter out of a job's log, or None (wandb's default)
    where LOOKSAM_VERBOSE=1 asks for it back or WANDB_SILENT says what the user wants."""
    if os.environ.get(VERBOSE_ENV, "0") not in ("", "0") or "WANDB_SILENT" in os.environ:
        return None
    import wandb

    return wandb.Settings(silent=True)


class Tracker:
    """Console + TensorBoard (clu) and a wandb run, with the same scalars sent to both.

    As a context manager it always finishes: "failed" when an exception escapes, "completed" when
    the block ends without `finish` having been called. `group`, `name` and `job_type` left None
    come from the config (`run_labels`); the config's tags come first, then `tags`.
    """

    def __init__(self, workdir: str, config: dict, *, mode: str | None, project: str, entity: str | None,
                 group: str | None, tags: list[str], name: str | None, resume_id: str | None,
                 tensorboard: bool = True, is_main: bool = True, job_type: str | None = None):
        self.is_main = is_main
        self.mode = wandb_mode(mode)
        self.status: str | None = None  # set by finish
        if is_main:
            os.makedirs(workdir, exist_ok=True)
        self._writer = _default_writer(workdir, just_logging=not (is_main and tensorboard))
        self._run = None
        # Carried over when wandb is off, so that the checkpoint still names the run to resume later.
        self.run_id: str | None = resume_id
        if is_main and self.mode != "disabled":
            labels = run_labels(config)
            self._run = _init_wandb(workdir, config, mode=self.mode, project=project, entity=entity,
                                    group=group or labels["group"], tags=[*labels["tags"], *tags],
                                    name=name or labels["name"], job_type=job_type or labels["job_type"],
                                    resume_id=resume_id)
            if self._run is not None:
                self.run_id = self._run.id

    @property
    def writer(self):
        """The clu metric writer (console + TensorBoard), e.g. for clu's periodic actions."""
        return self._writer

    def scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        self._writer.write_scalars(step, metrics)
        if self._run is not None:
            # Our step is a metric, not wandb's own step counter: a resumed run re-logs the steps
            # after its checkpoint, which wandb would drop as non-monotonic.
            self._guard(self._run.log, {"step": step, **metrics})

    def hparams(self, flat: Mapping[str, Any]) -> None:
        if self.is_main:
            # TensorBoard's hparams plugin takes bool, int, float and str only (not None or lists).
            ok = (bool, int, float, str)
            self._writer.write_hparams({k: v if isinstance(v, ok) else str(v) for k, v in flat.items()})

    def summary(self, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            self._guard(self._run.summary.update, dict(values))

    def finish(self, status: str) -> None:
        """Flushes the writers and closes the wandb run; exit code 0 only for "completed"."""
        if self.status is not None:
            return
        self.status = status
        try:
            self._writer.close()
        except Exception as e:
            logging.warning("Closing the metric writers failed: %s", e)
        if self._run is not None:
            run, self._run = self._run, None
            self._guard(run.summary.update, {"status": status})
            self._guard(run.finish, exit_code=0 if status == "completed" else 1)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Close the run in any case, or the next job of a Hydra multirun would find it still open.
        self.finish("failed" if exc_type is not None else "completed")

    @staticmethod
    def _guard(fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:
            logging.warning("wandb %s failed: %s", getattr(fn, "__name__", fn), e)


@functools.cache  # one warning per process
def _clu_writers():
    try:
        from clu import metric_writers
    except ImportError as e:  # clu.metric_writers imports TensorFlow
        logging.warning("No TensorBoard files and no clu progress scalars: clu's metric writers "
                        "need TensorFlow (%s); logging to the console only", e)
        return None
    return metric_writers


class ConsoleWriter:
    """The part of clu's MetricWriter the trainer uses, for machines without TensorFlow."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        del hparams  # the run's config is in its summary.json and .hydra/

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _default_writer(workdir: str, just_logging: bool):
    metric_writers = _clu_writers()
    if metric_writers is None:
        return ConsoleWriter()
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)


class _NoProgressReport:
    def __call__(self, step: int) -> None:
        del step

    def timed(self, name: str, wait_jax_async_dispatch: bool = True):
        del name, wait_jax_async_dispatch
        return contextlib.nullcontext()


def progress_report(writer, num_train_steps: int, every_steps: int):
    """clu's ReportProgress (steps/s, ETA and the time share of eval and checkpointing), or one
    that reports nothing where clu's writers cannot load."""
    if _clu_writers() is None:
        return _NoProgressReport()
    from clu import periodic_actions

    return periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                           every_steps=every_steps, every_secs=None)


def _log_offline_run(run) -> None:
    # The trainer's logger family (console and train.log), not absl's: the trainer quiets absl INFO.
    sync_dir = os.path.dirname(run.dir)
    std_logging.getLogger("looksam.tracking").info(
        "wandb run %s (%s) is offline in %s; upload it with: wandb sync %s", run.id, run.name, sync_dir,
        sync_dir)


def _init_wandb(workdir, config, *, mode, project, entity, group, tags, name, job_type, resume_id):
    try:
        import wandb

        run = wandb.init(
            project=project, entity=entity, group=group, tags=list(dict.fromkeys(tags)), name=name,
            job_type=job_type, config=config, mode=mode, dir=workdir, id=resume_id, resume="allow",
            settings=wandb_settings(),
            # A run left open by a crashed job in this process must not swallow the new one.
            reinit="finish_previous")
    except Exception as e:
        logging.warning("wandb is off for this run: wandb.init(mode=%r) failed: %s: %s",
                        mode, type(e).__name__, e)
        return None
    if mode == "offline":  # wandb's own hint is silenced (wandb_settings): one line instead
        Tracker._guard(_log_offline_run, run)
    # The x-axis of every chart is the training step.
    Tracker._guard(run.define_metric, "step")
    Tracker._guard(run.define_metric, "*", step_metric="step")
    return run
