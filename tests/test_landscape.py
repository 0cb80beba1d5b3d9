"""The loss-landscape tool (ESAM Figure 4: looksam/landscape.py computes, `python -m results
landscape` draws): the grid on a quadratic with known curvature, Li et al.'s filter normalisation,
and a smoke run end to end (checkpoint -> `python -m results landscape` -> files -> the registry
figure), its centre checked against the run's loss computed here without the tool."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from hydra import compose, initialize_config_dir

from looksam import config, landscape, models, train
from looksam.data import synthetic
from reproduce import registry
from results import __main__ as cli
from results import collect

CONFIGS = str(pathlib.Path(__file__).resolve().parents[1] / "configs")


# ---- the grid on a quadratic -------------------------------------------------------------------

def quadratic():
    """L(w) = 0.5 sum h_i w_i^2 on a two-leaf pytree, per-batch losses weighted by batch["n"]."""
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
              "b": {"c": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
    h = {"a": jnp.asarray(rng.uniform(0.5, 3.0, (2, 3)), jnp.float32),
         "b": {"c": jnp.asarray(rng.uniform(0.5, 3.0, (4,)), jnp.float32)}}

    def loss_sums(p, batch):
        value = 0.5 * sum(jnp.sum(hh * w**2) for hh, w in zip(jax.tree.leaves(h), jax.tree.leaves(p),
                                                                strict=True))
        return batch["n"] * value, batch["n"]

    return params, h, loss_sums, rng


def expected(params, h, d1, d2, a, b) -> float:
    leaves = zip(*(jax.tree.leaves(t) for t in (params, h, d1, d2)), strict=True)
    return sum(0.5 * float(np.sum(np.asarray(hh, np.float64) * (np.asarray(w, np.float64) + a * np.asarray(u)
                                                               + b * np.asarray(v)) ** 2))
               for w, hh, u, v in leaves)


def test_quadratic_surface_is_exact_at_every_grid_point():
    params, h, loss_sums, rng = quadratic()

    def direction():
        return jax.tree.map(lambda w: jnp.asarray(rng.normal(size=w.shape), jnp.float32), params)

    pairs = [(direction(), direction()) for _ in range(2)]
    alphas, betas = landscape.axis(5, 1.0), np.linspace(-1.0, 2.0, 7)  # 35 points: chunks of 4 leave 3
    batches = [{"n": jnp.float32(3.0)}, {"n": jnp.float32(5.0)}]  # the mean over both is L itself
    grid = landscape.evaluate_surface(loss_sums, params, pairs, alphas, betas, batches, chunk=4)
    assert grid.shape == (2, 5, 7)
    for g, (d1, d2) in enumerate(pairs):
        want = np.array([[expected(params, h, d1, d2, a, b) for b in betas] for a in alphas])
        np.testing.assert_allclose(grid[g], want, rtol=2e-6, atol=1e-6)
        # the known curvature along d1: L(a d1) - 2 L(0) + L(-a d1) = a^2 sum h d1^2
        curvature = sum(float(np.sum(np.asarray(hh) * np.asarray(u) ** 2))
                        for hh, u in zip(jax.tree.leaves(h), jax.tree.leaves(d1), strict=True))
        j0 = int(np.argmin(np.abs(betas)))
        assert betas[j0] == 0.0
        np.testing.assert_allclose(grid[g, 4, j0] - 2 * grid[g, 2, j0] + grid[g, 0, j0], curvature,
                                   rtol=1e-4)


def test_axis_holds_zero_for_odd_counts_and_refuses_nonsense():
    np.testing.assert_array_equal(landscape.axis(3, 2.0), [-2.0, 0.0, 2.0])
    assert landscape.axis(1, 1.0).tolist() == [0.0]
    with pytest.raises(ValueError, match="span"):
        landscape.axis(0, 1.0)


# ---- filter normalisation ----------------------------------------------------------------------

def filter_norms(x):
    x = np.asarray(x, np.float64)
    return np.sqrt(np.sum(x.reshape(-1, x.shape[-1]) ** 2, axis=0))


def test_filter_normalisation_matches_its_definition():
    rng = np.random.default_rng(1)
    params = {"Conv_0": {"kernel": rng.normal(size=(3, 3, 2, 4))},
              "Dense_0": {"kernel": rng.normal(size=(5, 3)) * 7.0, "bias": rng.normal(size=(3,))},
              "BatchNorm_0": {"scale": rng.normal(size=(4,)), "bias": rng.normal(size=(4,))}}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    raw = jax.tree.map(lambda w: jnp.asarray(rng.normal(size=w.shape) * 3.0, jnp.float32), params)
    for d in (landscape.filter_normalize(raw, params), landscape.random_direction(jax.random.key(0), params)):
        for path in (("Conv_0", "kernel"), ("Dense_0", "kernel")):
            w, u = params[path[0]][path[1]], d[path[0]][path[1]]
            assert u.shape == w.shape
            np.testing.assert_allclose(filter_norms(u), filter_norms(w), rtol=1e-5)
        for path in (("Dense_0", "bias"), ("BatchNorm_0", "scale"), ("BatchNorm_0", "bias")):
            assert not np.asarray(d[path[0]][path[1]]).any(), path
    # each filter keeps its direction: u_f = c_f d_f with c_f > 0
    u = np.asarray(landscape.filter_normalize(raw, params)["Conv_0"]["kernel"])
    ratio = (u / np.asarray(raw["Conv_0"]["kernel"])).reshape(-1, 4)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:1], ratio.shape), rtol=1e-5)
    assert (ratio > 0).all()


def test_direction_pairs_are_deterministic_per_seed_and_group():
    params = {"k": jnp.ones((4, 3)), "b": jnp.ones(3)}
    one, again = landscape.direction_pairs(params, 2, seed=3), landscape.direction_pairs(params, 3, seed=3)
    for (a1, a2), (b1, b2) in zip(one, again[:2], strict=True):
        np.testing.assert_array_equal(a1["k"], b1["k"])
        np.testing.assert_array_equal(a2["k"], b2["k"])
    assert not np.allclose(one[0][0]["k"], one[0][1]["k"])  # d1 and d2 differ
    assert not np.allclose(one[0][0]["k"], one[1][0]["k"])  # so do the groups
    assert not np.allclose(one[0][0]["k"], landscape.direction_pairs(params, 1, seed=4)[0][0]["k"])


# ---- a smoke run end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("landscape")
    workdir = str(home / "run")
    config.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=["scale=smoke", "model=cnn", "logger=disabled",
                                           f"trainer.workdir={workdir}"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        summary = train.run(cfg, workdir)
    assert summary["status"] == "completed"
    return home, workdir, summary


def direct_loss(workdir, step, images: int) -> float:
    """The mean cross-entropy of the saved weights on the first `images` mock training images,
    from the checkpoint files and the model alone (no code of looksam/landscape.py)."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                          checkpointer.metadata(path).item_metadata)
    state = checkpointer.restore(path, target)
    model = models.create("cnn", num_classes=10, widths=(4, 8))  # configs/scale/smoke.yaml's cnn
    x, y = synthetic.examples(32, 32, 10, "train")  # smoke: 32 mock examples of CIFAR-10's shape
    logits = model.apply({"params": state["params"], "batch_stats": state["batch_stats"]},
                         jnp.asarray(x[:images]), train=False)
    return float(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y[:images])).mean())


@pytest.mark.slow  # end to end; kept to `make test-slow` (CI runs it): `make test` stays under 15 min
def test_landscape_command_on_a_smoke_run(smoke_run, capsys):
    home, workdir, summary = smoke_run
    # Write where esam_figure4's sgd cell keeps its landscape, to render the figure from it below.
    seed_dir = registry.run_dir(home / "runs", "esam_figure4", "smoke", "resnet50", "sgd", 0)
    out = seed_dir / "landscape"
    assert cli.main(["landscape", workdir, "--grid", "3", "--images", "24", "--batch", "16",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint step {summary['step']}" in printed and "3x3 grid" in printed
    assert "24 training images" in printed  # two batches of 16, the second padded
    for name in landscape.FILES:
        assert (out / name).stat().st_size > 0, name
    with np.load(out / "landscape.npz") as f:
        loss, group_loss, alphas, centre = f["loss"], f["group_loss"], f["alphas"], float(f["centre_loss"])
    assert loss.shape == (3, 3) and group_loss.shape == (1, 3, 3)
    np.testing.assert_array_equal(alphas, [-1.0, 0.0, 1.0])
    assert np.isfinite(loss).all()
    want = direct_loss(workdir, summary["step"], 24)
    np.testing.assert_allclose(loss[1, 1], want, rtol=1e-5)
    np.testing.assert_allclose(centre, want, rtol=1e-5)
    record = json.loads((out / "landscape.json").read_text())
    assert record["settings"]["images"] == 24 and record["settings"]["checkpoint_step"] == summary["step"]
    assert np.asarray(record["loss"]).shape == (3, 3)

    # The registry figure draws that cell's surface and notes the two cells without one.
    table = registry.load("esam_figure4")
    renders = home / "renders"
    paths = cli.write(table, collect.collect(table, home / "runs", "smoke"), "smoke", "test", renders,
                      runs_dir=home / "runs")
    assert paths["png"].stat().st_size > 0 and "<svg" in paths["svg"].read_text()
    assert "could not draw" not in capsys.readouterr().err


def test_landscape_command_names_the_fix_without_a_checkpoint(tmp_path, capsys):
    assert cli.main(["landscape", str(tmp_path)]) == 2
    assert "no checkpoints/ folder" in capsys.readouterr().err
