"""The training loop's hooks: periodic actions in the interface of `clu.periodic_actions`.

A hook is called with the step number after every training step (`hook(step)`, as clu's
ReportProgress and Profile are), and, if it has `timed(name)`, that context manager wraps each
phase of the loop, named in PHASES. clu's own actions join as they are (`train.run(cfg, workdir,
hooks=[periodic_actions.Profile(...)])`); a benchmark adds its timers as a hook
(scripts/bench_trainer.py --breakdown) instead of replacing the trainer's internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

# The loop's phases, in the order one step meets them: building the input pipeline (once per
# process), fetching a batch, calling a compiled branch (the host's dispatch: XLA may still be
# running the step when it returns), the hooks themselves, then at a sync point the wait for the
# device, the metrics' fetch, evaluation and checkpointing. The trainer's images/s counts the time
# from a window's first `next` (after the input's start) to the end of its `sync`.
PHASES = ("input", "next", "sam_step", "plain_step", "hooks", "sync", "flush", "eval", "checkpoint")


class Hooks:
    """Several hooks as one: each called in turn, each one's timed() entered around a phase."""

    def __init__(self, hooks: Iterable = ()):
        self.hooks = list(hooks)
        self._timers = [h for h in self.hooks if hasattr(h, "timed")]

    def __call__(self, step: int) -> None:
        for hook in self.hooks:
            hook(step)

    def timed(self, name: str) -> contextlib.AbstractContextManager:
        if name not in PHASES:
            raise ValueError(f"unknown loop phase {name!r}; the loop's phases are {PHASES}")
        return self._timed(name) if self._timers else contextlib.nullcontext()

    @contextlib.contextmanager
    def _timed(self, name: str):
        with contextlib.ExitStack() as stack:
            for hook in self._timers:
                stack.enter_context(hook.timed(name))
            yield


class ReportProgress:
    """clu's ReportProgress (steps/s, ETA) as a hook timing only evaluation and checkpointing, its
    `timing/eval` and `timing/checkpoint` shares; the step phases would make it wait for the device."""

    TIMED = ("eval", "checkpoint")

    def __init__(self, report):
        self.report = report

    def __call__(self, step: int) -> None:
        self.report(step)

    def timed(self, name: str) -> contextlib.AbstractContextManager:
        if name in self.TIMED:
            return self.report.timed(name, wait_jax_async_dispatch=False)
        return contextlib.nullcontext()
