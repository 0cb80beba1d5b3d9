"""JAX's distributed runtime: one process per host (TPU pod worker) or per GPU (SLURM task).

`initialize` must run before anything touches a JAX backend. After it, `jax.devices()` lists the
devices of every process, the trainer's mesh spans them all, each process feeds its own part of
the global batch (`jax.make_array_from_process_local_data`) and process 0 alone writes logs,
wandb and summary.json; orbax writes each process's shards of a checkpoint. On CPU the
processes exchange collectives through gloo (JAX's default for multi-process CPU).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("looksam.distributed")


def wanted(dist, environ=os.environ) -> bool:
    """Whether this run is one process of several (see DistributedConfig.enabled)."""
    enabled = str(dist.enabled).lower()
    if enabled in ("true", "false"):
        return enabled == "true"
    if dist.coordinator_address is not None:
        return True
    # Under `srun`/submitit every task of a multi-task step is one process; a plain `sbatch`
    # allocation with a single task is an ordinary one-process run.
    return int(environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_STEP_ID" in environ


def initialize(dist) -> None:
    """Joins the distributed runtime when `wanted`; a no-op when already joined or not wanted."""
    import jax

    if not wanted(dist) or jax.distributed.is_initialized():
        return
    kwargs = {}
    if dist.coordinator_address is not None:
        kwargs = dict(coordinator_address=dist.coordinator_address,
                      num_processes=dist.num_processes, process_id=dist.process_id)
    if dist.local_device_ids is not None:
        kwargs["local_device_ids"] = list(dist.local_device_ids)
    # Without a coordinator JAX detects the cluster itself (SLURM, Cloud TPU, Open MPI, k8s).
    jax.distributed.initialize(initialization_timeout=dist.initialization_timeout, **kwargs)
    log.info("process %d of %d: %d local of %d devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def is_main() -> bool:
    import jax

    return jax.process_index() == 0
