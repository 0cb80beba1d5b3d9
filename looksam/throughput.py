"""Side-by-side throughput of a table's cells: images/s measured in one process, in alternating rounds.

Each cell's train step is the trainer's own (looksam/train.py: `validated_estimator`, `make_mesh`,
`base_optimizer`, `initial_state`, `make_train_step`, `compile_steps`), built from the cell's
composed config (reproduce/compose.py) and fed synthetic batches of the cell's shape. After one
untimed block per cell (first-run allocations), every round times each cell for `steps` steps,
rounded up to whole periods of the method (one SAM step and k-1 reuse steps for LookSAM-k; the
host picks the branch with `est.is_sam_step`, as the trainer does), rotating the cells' order
from round to round so that a slow drift of a shared machine falls on every cell alike.

    measure(table, scale, rounds=5, steps=10, cells=None, overrides=()) -> dict  # throughput.json

`python -m results record TABLE --throughput --scale S` writes it to
<runs>/<table>/<scale>[/reading-<name>]/throughput.json, where results/claims.py judges a claim
on a throughput metric from it; with `-o OVERRIDE --variant NAME` (e.g. the full-width model) to
throughput-NAME.json beside it, which is shown and kept but judges nothing.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time


def runner(cfg, compiler_options=None) -> dict:
    """(est, state, compiled steps, batch, images per step) of one composed config (a DictConfig),
    on synthetic data: the trainer's step as it runs, without a dataset."""
    import jax
    import numpy as np

    from looksam import config, train
    from looksam.data import pipeline

    est = config.validated_estimator(cfg)
    t = cfg.trainer
    _, replicated, sharded = train.make_mesh(t)
    spec = pipeline.spec(cfg.data.name)
    examples = cfg.data.mock_examples if cfg.data.mock else spec.train_examples
    model, schedule, tx = train.model_and_optimizer(cfg, spec, max(examples // t.batch_size, 1))
    root_key = jax.random.key(t.seed)
    state = jax.device_put(train.initial_state(model, tx, est, spec.image_size, root_key), replicated)
    est = dataclasses.replace(est, batch_sharding=sharded)
    shape = train.batch_shape(cfg, spec, sharded)
    compiled = train.compile_steps(
        train.make_train_step(model, tx, est, schedule, root_key, cfg.sam.batchnorm), est, state, shape,
        compiler_options)
    rng = np.random.default_rng(t.seed)
    image = rng.standard_normal(shape["image"].shape, np.float32)
    if shape["label"].ndim == 2:  # mixup or label smoothing: one-hot rows
        label = np.eye(spec.num_classes, dtype=np.float32)[rng.integers(0, spec.num_classes, len(image))]
    else:
        label = rng.integers(0, spec.num_classes, shape["label"].shape).astype(np.int32)
    batch = jax.device_put({"image": image, "label": label}, sharded)
    return dict(est=est, state=state, compiled=compiled, batch=batch, t=0, images=int(t.batch_size))


def _block(r, steps: int) -> float:
    """Runs `steps` train steps of runner r from where it stopped; returns the seconds they took."""
    import jax

    state, t0 = r["state"], time.perf_counter()
    for _ in range(steps):
        state, _ = r["compiled"][r["est"].is_sam_step(r["t"])](state, r["batch"])
        r["t"] += 1
    jax.block_until_ready(state)
    r["state"] = state
    return time.perf_counter() - t0


def measure(table, scale: str, rounds: int = 5, steps: int = 10, cells=None, overrides=(),
            progress=None) -> dict:
    """Every chosen cell of `table` (cell ids; default all) timed side by side at `scale`, each
    cell's config with `overrides` (Hydra overrides, e.g. scale.model_kwargs.resnet18.width=64)
    after its own; progress(text), when given, hears of each cell built and each round timed."""
    from omegaconf import OmegaConf

    from looksam import host_devices
    from reproduce import compose

    chosen = [c for c in table.cells if cells is None or c.id in cells]
    unknown = sorted(set(cells or ()) - {c.id for c in chosen})
    if unknown or not chosen:
        raise ValueError(f"{table.id}: no cell(s) {unknown}; choose from {[c.id for c in table.cells]}")
    if rounds < 1 or steps < 1:
        raise ValueError(f"--rounds {rounds} and --steps {steps} must be at least 1")
    say = progress or (lambda text: None)
    cfgs = [OmegaConf.create(c) for c in compose.configs(
        [dataclasses.replace(c, overrides=(*c.overrides, *overrides)) for c in chosen], scale)]
    host_devices.configure(cfgs[0].trainer)  # before JAX starts, as the trainer does (first cell's)
    import jax

    from looksam import train

    runners = {}
    for cell, cfg in zip(chosen, cfgs, strict=True):
        runners[cell.id] = r = runner(cfg)
        r["steps"] = math.ceil(steps / r["est"].period) * r["est"].period  # whole periods
        _block(r, r["steps"])  # warm-up, untimed
        r["rates"] = []
        say(f"built and warmed {cell.id} ({len(runners)}/{len(chosen)})")
    ids = list(runners)
    for i in range(rounds):
        for cell_id in ids[i % len(ids):] + ids[:i % len(ids)]:
            r = runners[cell_id]
            r["rates"].append(r["images"] * r["steps"] / _block(r, r["steps"]))
        say(f"round {i + 1}/{rounds}: " + ", ".join(f"{c} {runners[c]['rates'][-1]:,.0f}" for c in ids)
            + " images/s")
    out = {}
    for cell, cfg in zip(chosen, cfgs, strict=True):
        r = runners[cell.id]
        out[cell.id] = dict(method=cfg.sam.method, m=cfg.sam.get("m"), period=r["est"].period,
                            ideal_cost=r["est"].ideal_cost,
                            model=cfg.model.name, model_kwargs=OmegaConf.to_container(cfg.model.kwargs),
                            batch_size=r["images"], image_size=int(r["batch"]["image"].shape[1]),
                            steps_per_round=r["steps"], images_per_sec=r["rates"],
                            median=statistics.median(r["rates"]))
    return dict(table=table.id, scale=scale, reading=table.reading_name, overrides=list(overrides),
                rounds=rounds, steps=steps, machine=train.environment(jax.devices()), cells=out)
