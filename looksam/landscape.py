"""Loss landscapes around a run's final weights (ESAM Figure 4, after Li et al., 2018): the
computation and its files. `python -m results landscape` (results/landscape.py) is the command,
results/figures.py draws the surfaces.

    run = load_run(RUN_DIR); result = landscape(run, grid=21, groups=1, images=512, span=1.0)
    write(result, DIR); load(DIR)

RUN_DIR is a trainer workdir (a cell's <runs>/<table>/<scale>/<row>/<column>/seed<k>): its newest
complete checkpoint is restored with the trainer's own functions (`train.initial_state` builds the
target, `checkpoint.Checkpointer.restore` fills it, under the config recorded with the checkpoint),
and the mean cross-entropy over a fixed set of training images is evaluated at

    L(alpha, beta) = L(w + alpha d1 + beta d2)   on an N x N grid of [-S, S]^2,

for G independent pairs of random directions (d1, d2), then averaged over the pairs. The outputs
go to DIR (default RUN_DIR/landscape): landscape.npz (alphas, betas, the mean grid `loss`, the
per-pair grids `group_loss` [G, N, N], indexed [g, i, j] at (alphas[i], betas[j]), the centre
loss and the cosines of each pair), landscape.json (the settings, the same grid and summary
numbers) and landscape.png / .svg (surface and contour). `results/figures.py` draws a registry
figure of type `landscape` (reproduce/tables/esam_figure4.yaml) from these files, one cell each.

Directions, as Li et al.'s filter normalisation: every direction is drawn N(0, 1) per parameter,
then each filter of it is rescaled to the Frobenius norm of the same filter of the weights,
d_f <- d_f ||w_f|| / ||d_f||. A filter is one output unit: the slice at one index of a kernel's
last axis (Flax kernels are HWIO / (in, out), so this is PyTorch's weight[i]). Parameters with at
most one axis (biases, BatchNorm scales and offsets) get a zero direction (Li et al.'s
`ignore=biasbn`), so only kernels and embeddings move. BatchNorm runs in eval mode with the run's
running statistics (the trainer's `make_eval_step`, unchanged as the weights move). The loss is
the plain cross-entropy with the integer labels: no weight decay term, no label smoothing, no
mixup, whatever the run trained with.

Images: the first M examples of the run's training split (data.train_split, else the dataset's
train split) in the split's fixed file order, with the evaluation transform (no augmentation;
ImageNet's centre crop), so every grid point, group and rerun sees the same images. A run on
`data.mock=true` reads the same numpy examples its training drew from (looksam/data/synthetic.py).
Real data is read from TFDS: --data-dir, else the run's data.data_dir, else $TFDS_DATA_DIR (a
run's summary may record a null data_dir; CIFAR-10 here lives in ../shared/data/tfds).

Compute: per image batch and direction pair, one jit-compiled function evaluates every grid point,
`lax.map` over the points in vmapped chunks of C (C weight copies in memory at once); per-point
loss sums are accumulated in float64 on the host over the batches, so the data are read once.

The paper's setting and ours (`--scale`, explicit flags override a preset):

    paper (ESAM Section 3.2, "Visualization of Loss Landscapes"): "following the plotting algorithm
      in Li et al.", "two random sampled orthogonal Gaussian perturbations", "100x100 points for
      10 groups random Gaussian perturbations", "averaging over ten groups", ResNet-50 on
      ImageNet, cross-entropy loss (Figure 4's caption). `--scale paper`: grid 100, groups 10.
    not stated there, ours in both presets: the range (span 1: Li et al.'s [-1, 1]), how many and
      which images (paper preset 2,048, cpu 512 training images), train or test loss (training, as
      Li et al.), BatchNorm's mode, what happens to 1-D parameters, the seed of the directions (0).
      The directions are not orthogonalised: two independent Gaussian directions in millions of
      dimensions have a cosine of about 1/sqrt(#weights), as Li et al. note; the cosine of each
      pair is recorded and printed. A 100-point axis has no point at 0, so the centre loss is
      also evaluated on its own.
    cpu (the default): grid 21 (441 points), 1 group, 512 images. The smoke CNN (32 mock images)
      takes about 5 s for the grid on 2 shared CPU cores; a model of W forward images/s takes
      about 441 x 512 / W s (e.g. 19 min at 200 images/s): lower --grid or --images to fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any

import numpy as np

from looksam import summary as summary_file

PRESETS = {
    "cpu": {"grid": 21, "groups": 1, "images": 512, "span": 1.0},
    "paper": {"grid": 100, "groups": 10, "images": 2048, "span": 1.0},
}
FILES = ("landscape.npz", "landscape.json", "landscape.png", "landscape.svg")


# ---- directions --------------------------------------------------------------------------------

def filter_normalize(direction, params):
    """Each filter (an index of the last axis) of `direction` rescaled to the norm of the same
    filter of `params`; leaves with at most one axis, and non-float leaves, become zeros."""
    import jax
    import jax.numpy as jnp

    def one(d, w):
        if w.ndim <= 1 or not jnp.issubdtype(w.dtype, jnp.inexact):
            return jnp.zeros_like(w)
        axes = tuple(range(w.ndim - 1))
        w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
        d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        return (d * (w_norm / (d_norm + 1e-10))).astype(w.dtype)  # Li et al.'s epsilon

    return jax.tree.map(one, direction, params)


def random_direction(key, params):
    """A Gaussian direction of params' structure, filter-normalised against params."""
    import jax

    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, w.shape) for k, w in zip(keys, leaves, strict=True)]
    return filter_normalize(jax.tree.unflatten(treedef, noise), params)


def direction_pairs(params, groups: int, seed: int = 0) -> list[tuple[Any, Any]]:
    """G pairs (d1, d2); pair g depends on (seed, g) alone, so more groups extend fewer."""
    import jax

    root = jax.random.key(seed)
    return [tuple(random_direction(k, params) for k in jax.random.split(jax.random.fold_in(root, g)))
            for g in range(groups)]


def cosine(a, b) -> float:
    """The cosine between two pytrees taken as flat vectors."""
    import jax

    dot = sum(float(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)))
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    na = math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in jax.tree.leaves(a)))
    nb = math.sqrt(sum(float(np.sum(np.square(np.asarray(y, np.float64)))) for y in jax.tree.leaves(b)))
    return dot / (na * nb) if na and nb else float("nan")


# ---- the grid ----------------------------------------------------------------------------------

def axis(points: int, span: float) -> np.ndarray:
    """`points` values evenly over [-span, span] (an odd count holds 0 exactly)."""
    if points < 1 or span <= 0:
        raise ValueError(f"--grid {points} and --span {span}: need at least 1 point and a span > 0")
    return np.linspace(-span, span, points) if points > 1 else np.zeros(1)


def make_surface_fn(loss_sums, chunk: int = 4):
    """jit(params, d1, d2, coords [P, 2], batch) -> (loss totals [P], counts [P]) at
    params + a d1 + b d2 for each (a, b) of coords; `lax.map` runs `chunk` points at a time
    vmapped. loss_sums(params, batch) -> (sum of the batch's losses, number of examples)."""
    import jax
    import jax.numpy as jnp

    def surface(params, d1, d2, coords, batch):
        def at(ab):
            moved = jax.tree.map(
                lambda w, u, v: w + (ab[0] * u + ab[1] * v).astype(w.dtype)
                if jnp.issubdtype(w.dtype, jnp.inexact) else w, params, d1, d2)
            return loss_sums(moved, batch)

        return jax.lax.map(at, coords, batch_size=max(1, min(chunk, coords.shape[0])))

    return jax.jit(surface)


def evaluate_surface(loss_sums, params, pairs, alphas, betas, batches, chunk: int = 4) -> np.ndarray:
    """Mean loss [G, len(alphas), len(betas)]: entry [g, i, j] at params + alphas[i] d1_g +
    betas[j] d2_g, the mean over every example of `batches` (one pass over them)."""
    import jax.numpy as jnp

    a, b = np.meshgrid(np.asarray(alphas), np.asarray(betas), indexing="ij")
    coords = jnp.asarray(np.stack([a.ravel(), b.ravel()], -1), jnp.float32)
    fn = make_surface_fn(loss_sums, chunk)
    totals = np.zeros((len(pairs), coords.shape[0]))
    counts = np.zeros_like(totals)
    for batch in batches:
        for g, (d1, d2) in enumerate(pairs):
            total, count = fn(params, d1, d2, coords, batch)
            totals[g] += np.asarray(total, np.float64)
            counts[g] += np.asarray(count, np.float64)
    if not counts.all():
        raise ValueError("no images were evaluated: the training split is empty, or --images is 0")
    return (totals / counts).reshape(len(pairs), len(alphas), len(betas))


# ---- a run -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    directory: pathlib.Path
    cfg: Any  # the config recorded with the checkpoint (a DictConfig)
    model: Any
    state: Any  # train.TrainState as saved at `step`
    step: int


def recorded_config(run_dir: pathlib.Path, extra: dict) -> dict:
    config = extra.get("config")
    if config is None:  # a checkpoint from before configs were recorded there
        summary = summary_file.read(run_dir)
        config = summary.config if summary else None
    if not config:
        raise ValueError(f"{run_dir}: neither the checkpoint nor summary.json records the run's "
                         "config; rerun the training with this version of looksam.train")
    return config


def load_run(run_dir) -> Run:
    """The run's model and final state: its newest complete checkpoint restored onto the target
    the trainer itself builds from the recorded config (same model, optimizer and estimator)."""
    import jax
    import jax.numpy as jnp
    from omegaconf import OmegaConf

    from looksam import checkpoint, config, models, train
    from looksam.data import pipeline

    run_dir = pathlib.Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ValueError(f"{run_dir} has no checkpoints/ folder: pass a trainer workdir (a cell's "
                         "<runs>/<table>/<scale>/<row>/<column>/seed<k>) whose run saved a checkpoint")
    # keep: this reader never saves, so nothing of the run's is ever deleted.
    with checkpoint.Checkpointer(str(ckpt_dir), keep=10**9) as ckpt:
        step = ckpt.latest_step()
        if step is None:
            raise ValueError(f"{ckpt_dir} holds no complete checkpoint: let the run finish (or save "
                             "one, trainer.checkpoint_every_steps) and try again")
        recorded = recorded_config(run_dir, ckpt.extra(step))
        cfg = OmegaConf.merge(OmegaConf.structured(config.Config), recorded)
        est = config.validated_estimator(cfg)
        ds_spec = pipeline.spec(cfg.data.name)
        model = models.create(cfg.model.name, num_classes=ds_spec.num_classes,
                              dtype=jnp.dtype(cfg.model.dtype), **cfg.model.kwargs)
        # The optimizer's state has the same structure whatever its schedule's length.
        _, tx = train.base_optimizer(cfg, 1, max(1, math.ceil(cfg.trainer.epochs)))
        target = train.initial_state(model, tx, est, ds_spec.image_size, jax.random.key(cfg.trainer.seed))
        state, _ = ckpt.restore(step, target)
    return Run(run_dir, cfg, model, state, step)


def eval_loss_sums(model, batch_stats):
    """loss_sums(params, batch) -> (total, count): the trainer's eval step (BatchNorm on running
    statistics, masked cross-entropy), with the weights as an argument."""
    from looksam import train

    eval_step = train.make_eval_step(model)

    def loss_sums(params, batch):
        loss = eval_step(params, batch_stats, batch).loss
        return loss.total, loss.count

    return loss_sums


def _padded(images, labels, batch: int) -> dict[str, np.ndarray]:
    pad = batch - len(labels)
    return {"image": np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)]),
            "label": np.concatenate([labels, np.zeros(pad, labels.dtype)]),
            "mask": np.arange(batch) < len(labels)}


def training_batches(cfg, images: int, batch: int, data_dir: str | None = None):
    """(description, number of images, batches): the first `images` examples of the run's
    training split in its fixed order, evaluation transform, `batch` rows padded with mask=False."""
    from looksam.data import pipeline, synthetic

    ds_spec = pipeline.spec(cfg.data.name)
    split = cfg.data.train_split or ds_spec.train_split
    if images < 1 or batch < 1:
        raise ValueError(f"--images {images} and --batch {batch} must be >= 1")
    if cfg.data.mock:
        x, y = synthetic.examples(cfg.data.mock_examples, ds_spec.image_size, ds_spec.num_classes, split)
        x, y = x[:images], y[:images]
        batch = min(batch, len(y))
        batches = [_padded(x[s:s + batch], y[s:s + batch], batch) for s in range(0, len(y), batch)]
        return f"mock {cfg.data.name} {split!r} (data.mock=true)", len(y), iter(batches)
    directory = data_dir or cfg.data.data_dir
    try:
        builder = pipeline.builder(cfg.data.name, directory)
    except pipeline.DatasetNotPrepared as e:
        raise ValueError(f"{e} If the data lives elsewhere, pass --data-dir DIR (this checkout's "
                         "CIFAR-10: --data-dir ../shared/data/tfds).") from None
    count = min(images, pipeline.num_examples(builder, split))
    batch = min(batch, count)
    # A plain split is sliced to its first `count` examples, so TFDS reads no more than those;
    # a split that is already a slice or a sum is read from its start and cut off below.
    head = f"{split}[:{count}]" if split.isidentifier() else split
    ds = pipeline.eval_dataset(cfg.data.name, global_batch=batch, directory=directory, split=head,
                               process_index=0, process_count=1)

    def batches():
        left = count
        for b in pipeline.as_numpy(ds):
            if left <= 0:
                return
            mask = b["mask"] & (np.arange(len(b["mask"])) < left)
            left -= int(mask.sum())
            yield {**b, "mask": mask}

    return f"{cfg.data.name} {split!r} ({pipeline.data_dir(directory)})", count, batches()


def landscape(run: Run, *, grid: int, groups: int, images: int, span: float, seed: int = 0,
              batch: int = 128, chunk: int = 4, data_dir: str | None = None) -> dict:
    """The grid and its settings (the dict `write` records)."""
    import jax
    from omegaconf import OmegaConf

    if groups < 1:
        raise ValueError(f"--groups {groups}: need at least one pair of directions")
    alphas = betas = axis(grid, span)
    data, count, batches = training_batches(run.cfg, images, batch, data_dir)
    params = run.state.params
    loss_sums = eval_loss_sums(run.model, run.state.batch_stats)
    pairs = direction_pairs(params, groups, seed)
    centre_fn, centre = jax.jit(loss_sums), np.zeros(2)

    def with_centre(batches):
        """The batches, the loss at the weights themselves summed on the way: one read of them."""
        for b in batches:
            centre[:] += [float(v) for v in centre_fn(params, b)]
            yield b

    t0 = time.perf_counter()
    group_loss = evaluate_surface(loss_sums, params, pairs, alphas, betas, with_centre(batches), chunk)
    seconds = time.perf_counter() - t0
    centre = centre[0] / centre[1]
    loss = group_loss.mean(axis=0)
    cfg = run.cfg
    settings = {
        "run_dir": str(run.directory), "checkpoint_step": run.step, "model": cfg.model.name,
        "model_kwargs": OmegaConf.to_container(cfg.model.kwargs), "sam": cfg.sam.method,
        "dataset": cfg.data.name,
        "data": data, "images": count, "grid": grid, "groups": groups, "span": span, "seed": seed,
        "batch": min(batch, count), "chunk": chunk, "loss": "mean cross-entropy, integer labels",
        "directions": "Gaussian, filter-normalised (last axis = filter), 1-D parameters zero",
        "batchnorm": "eval mode, the run's running statistics",
        "table": cfg.get("table"), "cell": cfg.get("cell"),
    }
    return {"settings": settings, "alphas": alphas, "betas": betas, "loss": loss,
            "group_loss": group_loss, "centre_loss": centre,
            "cosines": [cosine(d1, d2) for d1, d2 in pairs], "seconds": seconds}


# ---- results and their files ------------------------------------------------------------------

def summary_numbers(result) -> dict:
    """What a reader compares between runs: the rise of the loss over the grid above the centre."""
    loss, centre = np.asarray(result["loss"]), float(result["centre_loss"])
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return {"centre_loss": centre, "min_loss": float(loss.min()),
            "min_at": [float(result["alphas"][i]), float(result["betas"][j])],
            "max_loss": float(loss.max()), "mean_rise": float(loss.mean() - centre),
            "max_rise": float(loss.max() - centre)}


def write(result, out) -> dict[str, pathlib.Path]:
    """landscape.npz and landscape.json in `out` (results/landscape.py adds the drawings)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"npz": out / "landscape.npz", "json": out / "landscape.json"}
    np.savez(paths["npz"], alphas=result["alphas"], betas=result["betas"], loss=result["loss"],
             group_loss=result["group_loss"], centre_loss=result["centre_loss"],
             cosines=np.asarray(result["cosines"]))
    record = {"settings": result["settings"], "summary": summary_numbers(result),
              "cosines": list(result["cosines"]), "seconds": result["seconds"],
              "alphas": np.asarray(result["alphas"]).tolist(),
              "betas": np.asarray(result["betas"]).tolist(),
              "loss": np.asarray(result["loss"]).tolist()}
    paths["json"].write_text(json.dumps(record, indent=1, default=str))
    return paths


def load(directory) -> dict | None:
    """A written landscape (the npz's arrays and the json's settings), or None without one."""
    directory = pathlib.Path(directory)
    try:
        with np.load(directory / "landscape.npz") as f:
            result = {k: f[k] for k in f.files}
    except (OSError, ValueError):
        return None
    try:
        result["settings"] = json.loads((directory / "landscape.json").read_text())["settings"]
    except (OSError, ValueError, KeyError):
        result["settings"] = {}
    return result
