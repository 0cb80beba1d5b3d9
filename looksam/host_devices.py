"""How many CPU devices a run splits its batch over, set before JAX starts.

XLA:CPU runs one device's convolutions on few threads, so one device leaves most cores idle
(the measured step times: docs/measurements.md, "Speed on a CPU: host devices"). Every entry point
(`looksam-train`, `python -m reproduce run`, the make targets, which all start `looksam.train`)
therefore asks XLA for as many host devices as the batch divides over, up to the cores this
process may use, unless the user said otherwise: a `--xla_force_host_platform_device_count`
already in XLA_FLAGS, or `trainer.num_devices` (which then gets exactly that many). On a GPU or
TPU the flag only adds CPU devices nobody uses.
"""

from __future__ import annotations

import math
import os
import sys

FLAG = "--xla_force_host_platform_device_count"


def available_cores() -> int:
    """The cores this process may run on (a SLURM or taskset limit included), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def device_count(batch_sizes, cores: int) -> int:
    """The largest divisor of every batch size that is at most `cores` (at least 1)."""
    common = 0
    for b in batch_sizes:
        common = math.gcd(common, int(b))
    return max((d for d in range(1, max(cores, 1) + 1) if common % d == 0), default=1)


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # another jax layout: assume the worst
        return True


def configure(trainer, environ=os.environ) -> str | None:
    """Adds the host device count to XLA_FLAGS for this run; returns why it did not, or None.

    `trainer` is the composed trainer config (batch_size, eval_batch_size, microbatch, num_devices).
    """
    flags = environ.get("XLA_FLAGS", "")
    if FLAG.lstrip("-") in flags:
        return "XLA_FLAGS sets the host device count"
    if _backend_started():
        return "JAX had already started (a multirun's earlier job chose the count)"
    if trainer.num_devices:
        count = int(trainer.num_devices)
    else:
        sizes = [trainer.batch_size, trainer.eval_batch_size]
        if trainer.microbatch:
            sizes.append(trainer.microbatch)
        count = device_count(sizes, available_cores())
    environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()
    return None
