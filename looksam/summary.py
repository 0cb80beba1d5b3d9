"""A run's `summary.json`: the one module that writes and reads it.

The trainer writes it when a run ends, completed or not (`write`); everything else reads it
through `read`: results/ (tables, claims, figures' histories, sweeps, the evidence store, the loss
landscape's config) and reproduce/ (which cells are done, `list`'s measured hours).

    read(run_dir) -> RunSummary | None     # None: no summary.json (missing, or still running)
    write(run_dir, data)                   # atomically: never a half-written summary

`RunSummary` is the summary as a read-only mapping (every key the trainer wrote, for the tables'
metric keys and the cost columns) with the fields the readers share typed, tolerant of summaries
from older trainers: an absent key reads as None (or an empty config and history), and a file that
cannot be parsed reads as a failed run that says why.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

FILE = "summary.json"
# What a summary may say of its run; results/collect.py adds "running" and "missing" for runs
# without one. Anything else, or none, reads as "failed".
STATUSES = ("completed", "diverged", "failed", "preempted")


class RunSummary(Mapping):
    """One run's summary.json as read (`read`): a mapping of what was written, and typed fields."""

    def __init__(self, data: Mapping, path: pathlib.Path | None = None):
        self._data, self.path = dict(data), path

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"RunSummary({self.status!r}, {self.path})"

    @property
    def status(self) -> str:
        status = self._data.get("status")
        return status if status in STATUSES else "failed"

    @property
    def message(self) -> str | None:
        return self._data.get("message") or None

    @property
    def config(self) -> dict:
        """The run's resolved config (looksam.run_identity.resolved); {} where none was recorded."""
        return self._data.get("config") or {}

    @property
    def history(self) -> list[dict]:
        """The evaluations in order, each {"epoch", "step", "test_accuracy", ...}."""
        return self._data.get("history") or []

    @property
    def steps_per_epoch(self) -> int | None:
        return self._data.get("steps_per_epoch")

    @property
    def total_seconds(self) -> float | None:
        return self.number("total_seconds")

    @property
    def step(self) -> int | None:
        return self._data.get("step")

    @property
    def evidence_from(self) -> str | None:
        """Set on the evidence store's copy of a run that another table's cell shares."""
        return self._data.get("evidence_from")

    def value(self, key: str) -> Any:
        """The value at `key`, where a dotted key ("cost.passes") walks nested mappings; None when
        absent."""
        return lookup(self._data, key)

    def number(self, key: str) -> float | None:
        """`value(key)` as a measurement (`measurement`)."""
        return measurement(self.value(key))


def lookup(mapping: Mapping, key: str) -> Any:
    """mapping[key], where a dotted key walks nested mappings; None when absent."""
    value: Any = mapping
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def measurement(value) -> float | None:
    """A recorded value as a measurement: a null, a string, a bool or a non-finite value is none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def path(run_dir) -> pathlib.Path:
    return pathlib.Path(run_dir) / FILE


def read(run_dir) -> RunSummary | None:
    """The summary in run_dir, None without one; an unreadable one reads as a failed run that
    says why (it counts against its cell instead of vanishing)."""
    file = path(run_dir)
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        return RunSummary({"status": "failed", "message": f"unreadable {FILE}: {e}"}, file)
    if not isinstance(data, dict):
        return RunSummary({"status": "failed", "message": f"{FILE} is not an object"}, file)
    return RunSummary(data, file)


def write(run_dir, data: Mapping) -> pathlib.Path:
    """Writes `data` as run_dir's summary through a temporary file, so a reader never sees half
    of one; values JSON cannot hold are written as their str()."""
    file = path(run_dir)
    tmp = file.with_name(FILE + ".tmp")
    tmp.write_text(json.dumps(dict(data), indent=1, default=str))
    os.replace(tmp, file)
    return file
