"""A cell's train step compiled at its real size from abstract shapes: FLOPs and memory per device.

The step is the trainer's own (`train.model_and_optimizer`, `train.initial_state`,
`train.make_train_step`, the `data` mesh over `devices` devices), lowered on
`jax.ShapeDtypeStruct`s (`jax.eval_shape` of the initial state: nothing is allocated, no data is
read) and compiled ahead of time, one program per branch the schedule takes (LookSAM-k: the SAM
step and the reuse step). From each compiled program:

- FLOPs: XLA's cost analysis of the partitioned program, which counts one device's share;
  times the device count for the step's total.
- memory per device: XLA's memory analysis: arguments + outputs - aliased (the donated state) +
  temporaries + generated code.

XLA:CPU compiles with LLVM's optimisation off (`COMPILER_OPTIONS`): code generation is most of
its compile time (PyramidNet-110: see docs/plan.md), and neither the HLO that the cost analysis
counts nor the buffer assignment that the memory analysis reports depends on it.

On CPU the estimator's backend-dependent choices are set as on an accelerator (`group_map=vmap`:
m-groups vmapped, as a GPU or TPU runs them), so the program is the one a GPU or TPU would
compile; its memory is XLA:CPU's estimate of that program, not a GPU allocator's.

    compile_cell(cfg) -> dict            # the program's figures; cfg: a composed, scaled config
    cell_figures(program, est, epochs)   # a cell's: FLOPs per step / image over its period

`python -m reproduce plan` (reproduce/plan.py) runs it for every cell and caches the results.
"""

from __future__ import annotations

import dataclasses
import time

import jax
from omegaconf import OmegaConf

from looksam import config, train
from looksam.data import pipeline

# Part of every cached plan's key (reproduce/plan.py): raise it with any change to the trainer's
# or an estimator's step that changes the compiled program, so stale entries are compiled afresh.
# 2: m-groups on several devices run per device (looksam/sam/estimator.py: _over_device_groups).
PROGRAM_VERSION = 2

# Code generation only: the optimised HLO and its buffer assignment are the same (module doc).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _abstract(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    parts = dict(arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes,
                 aliased=m.alias_size_in_bytes, temporaries=m.temp_size_in_bytes,
                 code=m.generated_code_size_in_bytes)
    parts["total"] = (parts["arguments"] + parts["outputs"] - parts["aliased"] + parts["temporaries"]
                      + parts["code"])
    return parts


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def compile_program(model, tx, est, schedule, image_size: int, batch, replicated, root_key,
                    batchnorm: str = "clean") -> dict:
    """Compiles the trainer's step of `model` for an abstract `batch` (train.batch_shape's dict of
    ShapeDtypeStructs) from an abstract initial state; per branch ("step", or "sam_step" and
    "reuse_step") the FLOPs of the whole step, the memory per device and the seconds to compile
    every branch."""
    devices = replicated.mesh.devices.size
    state = _abstract(jax.eval_shape(lambda: train.initial_state(model, tx, est, image_size, root_key)),
                      replicated)
    step = train.make_train_step(model, tx, est, schedule, root_key, batchnorm)
    t0 = time.perf_counter()
    compiled = train.compile_steps(step, est, state, batch, COMPILER_OPTIONS)
    seconds = round(time.perf_counter() - t0, 2)
    return {("step" if est.period == 1 else "sam_step" if sam_step else "reuse_step"):
            dict(flops=_flops(program) * devices, memory_per_device=_memory(program), compile_seconds=seconds)
            for sam_step, program in compiled.items()}


def flops_per_step(branches: dict, period: int) -> float:
    """Mean FLOPs of a step over one period of the schedule (one SAM step, period - 1 reuse steps)."""
    if "step" in branches:
        return branches["step"]["flops"]
    return (branches["sam_step"]["flops"] + (period - 1) * branches["reuse_step"]["flops"]) / period


def compile_cell(cfg) -> dict:
    """The compiled step(s) of a composed, scaled config on this process's devices
    (trainer.num_devices of them, else all): each branch's FLOPs, memory per device and compile
    seconds, with what shaped the program. The figures of the program, not of the cell: a cell
    with another rho, k > 1 or learning rate runs the same program (`cell_figures` adds those)."""
    est = dataclasses.replace(config.validated_estimator(cfg), group_map="vmap")  # module doc
    t = cfg.trainer
    devices, replicated, sharded = train.make_mesh(t)
    spec = pipeline.spec(cfg.data.name)
    model, schedule, tx = train.model_and_optimizer(cfg, spec, max(spec.train_examples // t.batch_size, 1))
    est = dataclasses.replace(est, batch_sharding=sharded)
    branches = compile_program(model, tx, est, schedule, spec.image_size,
                               train.batch_shape(cfg, spec, sharded), replicated,
                               jax.random.key(t.seed), cfg.sam.batchnorm)
    return dict(model=cfg.model.name, model_kwargs=OmegaConf.to_container(cfg.model.kwargs),
                dtype=cfg.model.dtype, image_size=spec.image_size, batch_size=int(t.batch_size),
                devices=len(devices), method=est.method, m=est.m, microbatch=est.microbatch,
                train_examples=spec.train_examples, branches=branches)


def cell_figures(program: dict, est, epochs: float) -> dict:
    """A cell's figures from its program's (`compile_cell`) and its own estimator and epochs: FLOPs
    per step and per image (the mean over the schedule's period), bytes per device (the larger
    branch)."""
    per_step = flops_per_step(program["branches"], est.period)
    return {**program, "period": est.period, "ideal_cost": est.ideal_cost, "epochs": float(epochs),
            "flops_per_step": per_step, "flops_per_image": per_step / program["batch_size"],
            "bytes_per_device": max(b["memory_per_device"]["total"] for b in program["branches"].values())}
