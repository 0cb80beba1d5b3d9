"""looksam.checkpoint: orbax round trips, retention, save gating, sharded restore, crash safety."""

import os
import pathlib
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from looksam import config, models, train
from looksam.checkpoint import Checkpointer

CONFIGS = str(pathlib.Path(__file__).resolve().parents[1] / "configs")
# A trainer checkpoint from before the state became a flax TrainState (its tree: params,
# batch_stats, opt_state, est_state; no `step`), written by
#   python -m looksam.train scale=smoke logger=disabled model=cnn sam=looksam sam.k=2 scale.max_steps=2
# : step 2 of a 4-step LookSAM-2 run (a SAM step at 0 stored g_v). The sums are of its arrays as
# written, in float64 over the leaves in tree order.
FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "checkpoint_v1"
FIXTURE_OVERRIDES = ("scale=smoke", "model=cnn", "sam=looksam", "sam.k=2")
FIXTURE_SUMS = {"params": 20.977363484043963, "g_v": 0.2025262232135674,
                "batch_stats": 20.921914737547922, "opt_state": 4.136150995171192}


class State(NamedTuple):  # the fields of the trainer's TrainState (any pytree saves)
    params: Any
    batch_stats: Any
    opt_state: Any
    est_state: Any
    rng: Any


def train_state(seed=0, batch_stats=True):
    """What the trainer saves: params, BatchNorm stats, optimizer and estimator state, a PRNG key."""
    k = jax.random.split(jax.random.key(seed), 3)
    return State(
        params={"dense": {"kernel": jax.random.normal(k[0], (8, 4)), "bias": jnp.zeros(4)},
                "emb": jax.random.normal(k[1], (8,)).astype(jnp.bfloat16)},
        batch_stats={"mean": jnp.full((4,), 0.5 + seed)} if batch_stats else None,
        opt_state={"count": jnp.int32(3 + seed), "mu": jnp.arange(32.0).reshape(8, 4) * seed},
        est_state={"step": jnp.int32(17 + seed), "g_v": {"kernel": jnp.ones((8, 4)) * seed}},
        rng=jax.random.key_data(k[2]),
    )


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("batch_stats", [True, False])
def test_round_trip_state_and_extra(tmp_path, batch_stats):
    state = train_state(1, batch_stats)
    extra = {"epoch": 2, "data_position": 1234, "wandb_run_id": "abc123", "best_accuracy": None,
             "last_eval": {"test_accuracy": 0.8125}, "history": [1, 2.5, None]}
    with Checkpointer(str(tmp_path / "ckpt")) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(7, state, extra, force=True)
        ckpt.wait()
        assert ckpt.latest_step() == 7
    with Checkpointer(str(tmp_path / "ckpt")) as ckpt:  # a new job resuming
        assert ckpt.latest_step() == 7
        restored, restored_extra = ckpt.restore(7, jax.tree.map(jnp.zeros_like, state))
    assert type(restored) is State and (restored.batch_stats is None) == (not batch_stats)
    assert_trees_equal(restored, state)
    assert restored.params["emb"].dtype == jnp.bfloat16
    assert restored.est_state["step"].dtype == jnp.int32 and restored.rng.dtype == jnp.uint32
    assert restored_extra == extra
    # The key data wraps back into the same key.
    np.testing.assert_array_equal(jax.random.uniform(jax.random.wrap_key_data(restored.rng), (3,)),
                                  jax.random.uniform(jax.random.wrap_key_data(state.rng), (3,)))


def test_extra_takes_numpy_and_jax_scalars_and_rejects_the_rest_at_once(tmp_path):
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(1, train_state(), {"acc": np.float32(0.5), "step": jnp.int32(1), "v": np.arange(2)},
                  force=True)
        assert ckpt.restore(1, train_state())[1] == {"acc": 0.5, "step": 1, "v": [0, 1]}
        with pytest.raises(TypeError, match="not JSON serializable"):
            ckpt.save(2, train_state(), {"bad": object()}, force=True)
        assert ckpt.latest_step() == 1


def test_saved_buffers_may_be_donated_right_away(tmp_path):
    """The trainer's next step donates the state: the save must not read the buffers afterwards."""
    state = jax.tree.map(jnp.copy, train_state(3))
    expected = jax.tree.map(np.asarray, state)
    with Checkpointer(str(tmp_path)) as ckpt:
        assert ckpt.save(3, state, {}, force=True)
        for leaf in jax.tree.leaves(state):
            leaf.delete()
        ckpt.wait()
        restored, _ = ckpt.restore(3, train_state())
    assert_trees_equal(restored, expected)


def test_keeps_the_newest_k(tmp_path):
    with Checkpointer(str(tmp_path), keep=2, every_steps=1) as ckpt:
        for step in range(1, 6):
            assert ckpt.save(step, train_state(step), {"step": step})
        ckpt.wait()
        assert ckpt.latest_step() == 5
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [4, 5]
    with Checkpointer(str(tmp_path), keep=2, every_steps=1) as ckpt:
        assert ckpt.latest_step() == 5
        restored, extra = ckpt.restore(4, train_state())
    assert_trees_equal(restored, train_state(4))
    assert extra == {"step": 4}


def test_every_steps_gating_and_force(tmp_path):
    state = train_state()
    with Checkpointer(str(tmp_path), keep=10, every_steps=3) as ckpt:
        assert [ckpt.save(s, state, {}) for s in range(8)] == [s % 3 == 0 for s in range(8)]
        assert ckpt.save(7, state, {}, force=True)
        # A final forced save at a step already saved is a no-op, not an error.
        assert not ckpt.save(7, state, {}, force=True)
        ckpt.wait()
        assert ckpt.latest_step() == 7
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [0, 3, 6, 7]


def test_restore_onto_a_sharded_target(tmp_path):
    devices = jax.devices()
    assert len(devices) == 8  # tests/conftest.py
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    state = train_state(2)
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(0, state, {"epoch": 0})
        # Replicated, as the trainer holds its state; one leaf split over "data" as well.
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
        split = NamedSharding(mesh, P("data"))
        target.opt_state["mu"] = jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=split)
        restored, _ = ckpt.restore(0, target)
    assert_trees_equal(restored, state)
    for leaf, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert leaf.sharding == want.sharding
    assert restored.opt_state["mu"].addressable_shards[0].data.shape == (1, 4)
    assert restored.est_state["step"].sharding.is_fully_replicated


def test_half_written_checkpoints_are_ignored(tmp_path):
    with Checkpointer(str(tmp_path), every_steps=2) as ckpt:
        ckpt.save(2, train_state(2), {"step": 2})
    # What a job killed mid-save leaves: orbax (commit-file mode) writes `<step>/commit_success.txt`
    # last, so step 4 lacks it; a leftover of the rename mode is `<step>.orbax-checkpoint-tmp`.
    assert os.path.exists(tmp_path / "2" / "commit_success.txt")
    shutil.copytree(tmp_path / "2", tmp_path / "4")
    os.remove(tmp_path / "4" / "commit_success.txt")
    shutil.copytree(tmp_path / "2", tmp_path / "6.orbax-checkpoint-tmp")
    os.remove(tmp_path / "6.orbax-checkpoint-tmp" / "commit_success.txt")
    with Checkpointer(str(tmp_path), every_steps=2) as ckpt:
        assert ckpt.latest_step() == 2
        restored, extra = ckpt.restore(ckpt.latest_step(), train_state())
        assert_trees_equal(restored, train_state(2))
        assert extra == {"step": 2}
        # Resumed from 2, the job reaches step 4 again and saves over the remains.
        assert ckpt.save(4, train_state(4), {"step": 4})
        ckpt.wait()
        assert ckpt.latest_step() == 4
        restored, extra = ckpt.restore(4, train_state())
    assert_trees_equal(restored, train_state(4))
    assert extra == {"step": 4}


@pytest.mark.parametrize("case", ["read_only_dir", "parent_is_a_file"])
def test_unwritable_directory_fails_at_construction(tmp_path, case):
    if case == "read_only_dir":
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o500)
        if os.access(parent, os.W_OK):  # root ignores the mode bits
            parent.chmod(0o700)
            pytest.skip("running as root: chmod does not make a directory unwritable")
    else:
        parent = tmp_path / "file"
        parent.write_text("not a directory")
    directory = str(parent / "ckpt")
    try:
        with pytest.raises(ValueError, match=f"{directory}.*writable"):
            Checkpointer(directory)
    finally:
        parent.chmod(0o700)


def tree_sum(tree) -> float:
    return float(sum(np.asarray(x, np.float64).sum() for x in jax.tree.leaves(tree)))


def fixture_target():
    """The trainer's fresh state for the fixture's config: the target a resumed run restores onto."""
    from hydra import compose, initialize_config_dir

    config.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = config.scaled_config(compose("config", overrides=list(FIXTURE_OVERRIDES)))
    est = config.validated_estimator(cfg)
    model = models.create(cfg.model.name, num_classes=10, **cfg.model.kwargs)
    _, tx = train.base_optimizer(cfg, 4, 4)
    return train.initial_state(model, tx, est, 32, jax.random.key(cfg.trainer.seed))


def test_a_checkpoint_from_before_the_flax_train_state_restores(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "run")  # the Checkpointer probes its directory by writing
    target = fixture_target()
    with Checkpointer(str(tmp_path / "run" / "checkpoints")) as ckpt:
        assert ckpt.latest_step() == 2
        state, extra = ckpt.restore(2, target)
    assert type(state) is type(target)
    assert jax.tree.structure(state) == jax.tree.structure(target)
    assert int(state.step) == int(state.est_state.step) == 2 == extra["step"]
    # Two buffers (the train step donates the state: one buffer twice would be freed twice).
    assert (state.step.unsafe_buffer_pointer() != state.est_state.step.unsafe_buffer_pointer()
            and state.step.sharding == target.step.sharding)
    assert extra["counters"] == {"sam_steps": 1, "reuse_steps": 1, "passes": 3.0}
    sums = {"params": tree_sum(state.params), "g_v": tree_sum(state.est_state.g_v),
            "batch_stats": tree_sum(state.batch_stats), "opt_state": tree_sum(state.opt_state)}
    assert sums == pytest.approx(FIXTURE_SUMS, rel=1e-12)
    assert sums["g_v"] != 0.0  # LookSAM's g_v from the SAM step at 0, not the fresh zeros
