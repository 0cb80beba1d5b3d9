"""Checkpoints of the training state with orbax: atomic, asynchronous, restored onto any sharding.

One step is a directory `<directory>/<step>/` with two items: `state` (the pytree of arrays, written
with tensorstore by every process for its own shards) and `extra` (JSON metadata: data position,
wandb run id, best accuracy, ...). A step is complete once orbax has written
`<step>/commit_success.txt`, last, after every process finished (orbax's commit-file mode, chosen
on every filesystem: renaming a directory is not atomic on GCS or gcsfuse, and a copied or partly
synced step directory is no checkpoint either). `latest_step` and `restore` see complete steps
only; the remains of a killed save are replaced when that step is saved again. Leftovers of
orbax's other mode (`<step>.orbax-checkpoint-tmp`) are ignored too.

The state must hold plain arrays: store a PRNG key as `jax.random.key_data(key)` (uint32) and wrap
it again with `jax.random.wrap_key_data` after the restore.

A trainer checkpoint from before its state was a flax TrainState (looksam/train.py) still restores:
`restore` maps it (`V1_FIELDS`; tests/fixtures/checkpoint_v1 is one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

# The trainer's state before it was a flax TrainState: these four fields, without TrainState's
# `step`, which equals the estimator's own counter est_state.step (both count every training step).
V1_FIELDS = ("params", "batch_stats", "opt_state", "est_state")


class Checkpointer:
    """Saves every `every_steps` steps (or when forced) and keeps the newest `keep` checkpoints."""

    def __init__(self, directory: str, *, keep: int = 2, every_steps: int = 1000):
        if keep < 1 or every_steps < 1:
            raise ValueError(f"keep={keep}, every_steps={every_steps}: both must be >= 1")
        self._local = "://" not in directory  # gs:// and other remote paths go to orbax as they are
        self.directory = os.path.abspath(directory) if self._local else directory
        if self._local:
            _check_writable(self.directory)
        # No InitialSavePolicy: a fresh run does not save at its first step unless asked. A
        # preemption notice is the caller's to act on with force=True (train.PreemptionNotice
        # agrees on the step across processes); a policy here would only see the due steps.
        policy = checkpoint_managers.FixedIntervalPolicy(every_steps)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, save_decision_policy=policy,
            # One completeness rule on every filesystem: a step counts once its commit file exists.
            atomicity_options=ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE))
        self._in_flight: int | None = None
        self._keep = keep
        # Handlers named up front, so that a step's metadata is readable before its first restore.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()})

    def check_space(self, state) -> None:
        """Fails at the start when the disk cannot hold the checkpoints this run will keep (the
        `keep` newest plus the one being written), not hours later at the first save."""
        if not self._local:
            return
        size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state) if hasattr(x, "dtype"))
        needed = (self._keep + 1) * size
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise ValueError(
                f"Checkpoint directory {self.directory} has {free / 2**20:.0f} MiB free, but this "
                f"run keeps {self._keep} checkpoint(s) of {size / 2**20:.0f} MiB plus one in "
                f"flight ({needed / 2**20:.0f} MiB). Free space there, point trainer.workdir "
                "elsewhere, or lower trainer.keep_checkpoints.")

    def latest_step(self) -> int | None:
        steps = self._manager.all_steps()
        if self._manager.is_saving_in_progress():  # orbax lists a step as soon as its save starts
            steps = [s for s in steps if s != self._in_flight]
        return max(steps, default=None)

    def save(self, step: int, state, extra: dict, *, force: bool = False) -> bool:
        """Starts an asynchronous save; True when one was started.

        The arrays are copied to host memory before this returns, so the next (donating) training
        step may reuse their buffers while the files are written in the background.
        """
        if step in self._manager.all_steps():
            return False  # e.g. the final forced save right after a periodic one at the same step
        # numpy and jax scalars become Python numbers; anything else JSON cannot write fails here, in
        # the caller, rather than in orbax's background thread at the next wait.
        extra = jax.tree.map(lambda x: x.tolist() if isinstance(x, np.ndarray | np.generic | jax.Array)
                             else x, extra)
        json.dumps(extra)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra))
        saved = self._manager.save(step, args=args, force=force)
        if saved:
            self._in_flight = step
        return saved

    def restore(self, step: int, target) -> tuple[Any, dict]:
        """The state of `step` with `target`'s shapes, dtypes and shardings, and its metadata."""
        self.wait()  # `step` may be the save still in flight
        saved = self._manager.item_metadata(step)["state"]
        v1 = hasattr(target, "step") and "step" not in saved and all(k in saved for k in V1_FIELDS)
        item = {k: getattr(target, k) for k in V1_FIELDS} if v1 else target
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, item)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        state = restored.state
        if v1:  # a copy: one buffer twice in the state would be donated twice by the train step
            state = target.replace(step=jnp.copy(state["est_state"].step), **state)
        return state, dict(restored.extra or {})

    def extra(self, step: int) -> dict:
        """The metadata of `step` alone, without reading its arrays (to check before restoring)."""
        self.wait()
        restored = self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
        return dict(restored.extra or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()  # waits for the pending save first

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_writable(directory: str) -> None:
    """Fails before training when no checkpoint could ever be written, not hours in at the first."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".write_probe"):
            pass
    except OSError as e:
        raise ValueError(
            f"Checkpoint directory {directory} cannot be created or written ({e.strerror or e}). "
            "Point trainer.workdir at a writable location or fix the directory's permissions."
        ) from e
