"""End-to-end smoke runs of the trainer on mock data: outputs, devices, resume, divergence, and
reruns with another config in the same workdir."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from looksam import checkpoint, config, run_identity, train

CONFIGS = str(pathlib.Path(__file__).resolve().parents[1] / "configs")


def cfg_for(workdir, *overrides):
    config.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=["scale=smoke", "logger=offline",
                                            f"trainer.workdir={workdir}", *overrides])


def final_state(workdir, step):
    """The saved state as host arrays, whatever mesh or process count wrote it."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                          checkpointer.metadata(path).item_metadata)
    return checkpointer.restore(path, target)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol, atol)


def kept_steps(workdir):
    return sorted(int(p.name) for p in pathlib.Path(workdir, "checkpoints").iterdir() if p.name.isdigit())


def isolate_wandb(mp, home):
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.setenv("WANDB_DIR", str(home))
    mp.setenv("HOME", str(home))  # no ~/.netrc API key


@pytest.fixture(autouse=True)
def no_wandb_network(monkeypatch, tmp_path):
    isolate_wandb(monkeypatch, tmp_path)


SMOKE = ("sam=looksam", "sam.k=2")


@contextlib.contextmanager
def trainer_log():
    """The messages looksam.train logs at INFO and above while the block runs."""
    lines = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("looksam.train")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One LookSAM-2 smoke run (4 steps) for the tests that only read it: (workdir, the summary
    run returned, the trainer's console log lines)."""
    home = tmp_path_factory.mktemp("smoke")
    workdir = str(home / "run")
    with trainer_log() as lines, pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, home)
        summary = train.run(cfg_for(workdir, *SMOKE), workdir)
    return workdir, summary, lines


def scalar_events(workdir, tag):
    """(step, value) of every TensorBoard scalar `tag` written in workdir."""
    events = []
    for path in glob.glob(f"{workdir}/**/events.out.tfevents.*", recursive=True):
        acc = EventAccumulator(path, size_guidance={"tensors": 0})
        acc.Reload()
        if tag in acc.Tags()["tensors"]:
            events += [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    return events


def test_smoke_run_writes_every_output(smoke):
    workdir, summary, lines = smoke
    on_disk = json.loads(pathlib.Path(workdir, "summary.json").read_text())
    assert on_disk["status"] == summary["status"] == "completed"
    for key in ("final_test_accuracy", "best_test_accuracy", "final_train_loss", "images_per_sec",
                "images_per_sec_per_device", "seconds_per_epoch", "total_seconds", "compile_seconds",
                "code_version"):
        assert on_disk[key] is not None, key
    assert 0.0 <= on_disk["final_test_accuracy"] <= 1.0
    assert on_disk["config"]["sam"]["method"] == "looksam" and on_disk["step"] == 4
    assert on_disk["cost"]["sam_steps"] == 2 and on_disk["cost"]["reuse_steps"] == 2  # k = 2
    assert on_disk["cost"]["passes"] == pytest.approx(2 * 2 + 2 * 1)
    assert on_disk["hardware"]["device_count"] == len(jax.devices())
    assert re.fullmatch(r"[0-9a-f]{40}", on_disk["code_version"]), "tests run in a git checkout"
    assert glob.glob(f"{workdir}/**/events.out.tfevents.*", recursive=True), "TensorBoard events"
    assert on_disk["wandb_id"] and glob.glob(f"{workdir}/wandb/offline-run-*-{on_disk['wandb_id']}")
    # orbax writes the commit marker last: the final step is complete, not just started.
    assert os.path.isfile(f"{workdir}/checkpoints/4/commit_success.txt")
    # Compilation: one console line and one scalar, both agreeing with the summary.
    compiled = [float(m[1]) for line in lines if (m := re.fullmatch(r"compiled \d+ .* in (\d+\.\d) s", line))]
    assert compiled == [pytest.approx(on_disk["compile_seconds"], abs=0.051)]
    assert scalar_events(workdir, "compile_seconds") == [(0, pytest.approx(on_disk["compile_seconds"]))]


def test_hooks_are_called_every_step_and_around_each_phase(tmp_path):
    """looksam/hooks.py: a hook with timed() sees the loop's phases in order; clu's periodic
    actions join as they are."""
    from clu import periodic_actions

    class Recorder:
        def __init__(self):
            self.steps, self.phases = [], []

        def __call__(self, step):
            self.steps.append(step)

        @contextlib.contextmanager
        def timed(self, name):
            self.phases.append(name)
            yield

    recorder, every_two = Recorder(), []
    workdir = str(tmp_path / "run")
    # One mock epoch of 4 steps (32 examples, batch 8); LookSAM-2: SAM at steps 0 and 2.
    summary = train.run(cfg_for(workdir, "sam=looksam", "sam.k=2", "trainer.checkpoint_every_steps=3"),
                        workdir, hooks=[recorder, periodic_actions.PeriodicCallback(
                            every_steps=2, callback_fn=lambda step, t: every_two.append(step))])
    assert summary["status"] == "completed" and summary["step"] == 4
    assert recorder.steps == [1, 2, 3, 4] and every_two == [2, 4]
    # log_every_steps=1 at scale=smoke: a sync and a flush after every step; checkpoints at 3 and
    # the final 4; one evaluation, at the end of the epoch.
    one_step = lambda branch: ["next", branch, "hooks", "sync", "flush"]  # noqa: E731
    assert recorder.phases == (["input"] + one_step("sam_step") + one_step("plain_step")
                               + one_step("sam_step") + ["checkpoint"] + one_step("plain_step")
                               + ["eval", "checkpoint"])


def test_an_eval_batch_that_does_not_divide_over_the_devices_is_rounded_up(tmp_path):
    """12 over 8 devices evaluates in batches of 16, padded and masked: the same accuracy and loss
    as batches of 8 (the papers' 2,048-chip slice and the default 1,024 alike)."""
    results = []
    for eval_batch in (8, 12):
        workdir = str(tmp_path / f"eval{eval_batch}")
        cfg = cfg_for(workdir, "trainer.num_devices=8", f"scale.eval_batch_size={eval_batch}")
        assert train.Inputs(config.scaled_config(cfg), train.make_mesh(
            config.scaled_config(cfg).trainer)[2]).eval_batch_size() == {8: 8, 12: 16}[eval_batch]
        summary = train.run(cfg, workdir)
        results.append((summary["final_test_accuracy"], summary["final_test_loss"]))
    assert results[1] == pytest.approx(results[0], rel=1e-6)


def test_eight_devices_equal_one(tmp_path):
    assert len(jax.devices()) == 8, "tests/conftest.py asks for 8 CPU devices"
    states = []
    for devices in (1, 8):
        workdir = str(tmp_path / f"d{devices}")
        summary = train.run(cfg_for(workdir, "sam=sam", f"trainer.num_devices={devices}"), workdir)
        assert summary["hardware"]["device_count"] == devices
        states.append(final_state(workdir, 4))
    assert_trees_close(states[0], states[1])


def test_resume_equals_a_straight_run(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    # Two mock epochs of 4 steps: the schedule's length; max_steps stops the first leg at 3.
    common = ["sam=looksam", "sam.k=3", "trainer.checkpoint_every_steps=2", "scale.epochs=2",
              "scale.max_steps=6"]
    s1 = train.run(cfg_for(straight, *common), straight)
    first = train.run(cfg_for(split, *common[:-1], "scale.max_steps=3"), split)
    assert first["step"] == 3
    with checkpoint.Checkpointer(os.path.join(split, "checkpoints")) as ckpt:  # read before s2 prunes it
        carried = ckpt.extra(3)["wall_seconds"]
    s2 = train.run(cfg_for(split, *common), split)  # same workdir: resumes from step 3
    assert first["wandb_id"] and s2["wandb_id"] == first["wandb_id"]  # offline: real run ids
    assert s2["step"] == 6
    assert_trees_close(final_state(straight, 6), final_state(split, 6))
    for key in ("final_test_accuracy", "final_train_loss"):  # best: the first leg evaluated at 3 too
        assert s2[key] == pytest.approx(s1[key], rel=1e-5), key
    assert s2["cost"] == s1["cost"]
    # The second process's total_seconds adds the first's up to its last checkpoint (after its final
    # evaluation: all but the checkpoint's writing and the summary's), whatever the machine's load.
    assert 0 < carried <= first["total_seconds"]
    assert s2["total_seconds"] == pytest.approx(s2["process_seconds"] + carried, abs=0.01)


@pytest.mark.slow  # end to end; kept to `make test-slow` (CI runs it): `make test` stays under 15 min
def test_a_checkpoint_from_before_the_flax_train_state_resumes(tmp_path):
    """tests/fixtures/checkpoint_v1 (step 2 of 4, tests/test_checkpoint.py says how it was written)
    resumes at step 2 and ends where a straight run of this code ends."""
    from test_checkpoint import FIXTURE, FIXTURE_OVERRIDES

    resumed, straight = str(tmp_path / "resumed"), str(tmp_path / "straight")
    shutil.copytree(FIXTURE, resumed)
    s1 = train.run(cfg_for(straight, *FIXTURE_OVERRIDES), straight)
    s2 = train.run(cfg_for(resumed, *FIXTURE_OVERRIDES), resumed)
    assert s2["status"] == "completed" and s2["step"] == 4
    assert s2["cost"] == s1["cost"]  # the fixture's counters (steps 0 and 1) carried on
    assert_trees_close(final_state(resumed, 4), final_state(straight, 4))
    for key in ("final_test_accuracy", "final_test_loss", "final_train_loss"):
        assert s2[key] == pytest.approx(s1[key], rel=1e-5), key


def nan_from_the_third_update(monkeypatch):
    """A NaN learning rate from the third update on: the loss of step 3 is still finite (it is
    computed before the update), the parameters after it are not."""
    real = train.base_optimizer

    def base_optimizer(cfg, steps_per_epoch, epoch_steps):
        schedule, _ = real(cfg, steps_per_epoch, epoch_steps)
        return schedule, optax.sgd(lambda count: jnp.where(count >= 2, jnp.nan, schedule(count)))

    monkeypatch.setattr(train, "base_optimizer", base_optimizer)


@pytest.mark.parametrize("cause", ["huge_lr", "nan_update"])
def test_non_finite_loss_ends_with_status_diverged(tmp_path, monkeypatch, cause):
    workdir = str(tmp_path / "nan")
    overrides = ["trainer.checkpoint_every_steps=1", "scale.max_steps=6"]
    if cause == "huge_lr":
        overrides.append("optimizer.lr=1e30")
    else:
        nan_from_the_third_update(monkeypatch)
    summary = train.run(cfg_for(workdir, *overrides), workdir)
    assert summary["status"] == "diverged" and "non-finite" in summary["message"]
    kept = kept_steps(workdir)
    assert kept and max(kept) < summary["step"]  # the last good checkpoint, not the bad step
    assert f"checkpoint (step {max(kept)}) is kept" in summary["message"]
    if cause == "nan_update":
        assert summary["step"] == 3 and kept == [1, 2]  # update 3 made the state NaN
    for leaf in jax.tree.leaves(final_state(workdir, max(kept))):
        assert np.isfinite(np.asarray(leaf)).all()
    assert json.loads(pathlib.Path(workdir, "summary.json").read_text())["status"] == "diverged"


def test_rerun_with_another_config_in_the_same_workdir(smoke, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(smoke[0], workdir)  # this test's own copy of the completed run
    summary_path = pathlib.Path(workdir, "summary.json")
    before = summary_path.read_bytes()
    files = sorted(str(p) for p in pathlib.Path(workdir, "checkpoints").rglob("*"))

    other = cfg_for(workdir, *SMOKE, "sam.rho=0.1")
    with pytest.raises(run_identity.ConfigMismatch) as info:
        train.run(other, workdir)
    message = str(info.value)
    assert "sam.rho: 0.05 -> 0.1" in message and "another trainer.workdir" in message
    assert "trainer.workdir:" not in message  # the copy's new workdir may differ
    train.write_failure(workdir, other, info.value)  # what the Hydra entry point does with it
    assert summary_path.read_bytes() == before
    assert sorted(str(p) for p in pathlib.Path(workdir, "checkpoints").rglob("*")) == files

    # Only logging and checkpoint cadence changed: the completed run's summary, nothing rerun.
    same = train.run(cfg_for(workdir, *SMOKE, "logger.tensorboard=false", "scale.log_every_steps=2",
                             "trainer.checkpoint_every_steps=2"), workdir)
    assert same == json.loads(before) and summary_path.read_bytes() == before
    # A rerun that fails (here: data gone) leaves the completed run's result as it was.
    train.write_failure(workdir, other, FileNotFoundError("no cifar10 in /nowhere"))
    assert summary_path.read_bytes() == before

    summary_path.unlink()  # the checkpoint alone is checked too
    with pytest.raises(run_identity.ConfigMismatch, match=r"checkpoint step 4(?s:.*)sam\.k: 2 -> 3"):
        train.run(cfg_for(workdir, "sam=looksam", "sam.k=3"), workdir)


@pytest.mark.parametrize("overrides,pattern", [
    (["sam=looksam", "sam.k=0"], r"^sam\.k=0 is out of range"),
    (["trainer.batch_size=-4"], r"^trainer\.batch_size=-4: must be a positive multiple of the device count"),
    (["optimizer.base_batch=0"], r"^optimizer\.base_batch=0: must be the batch the lr is given for"),
    (["schedule.end_lr=-1"], r"^schedule\.end_lr=-1\.0: must be >= 0"),
    (["trainer.num_devices=9"], r"trainer\.num_devices=9: this process has 8 cpu device"),
    (["scale.log_every_steps=0"], r"scale\.log_every_steps=0: must be >= 1"),
])
def test_bad_config_fails_before_compiling(tmp_path, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        train.run(cfg_for(str(tmp_path), *overrides), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_validation_split_is_evaluated_and_history_kept(tmp_path):
    """A held-out validation split is evaluated with the test split at every evaluation; the
    summary keeps both and one history row per evaluation (2 epochs of 4 steps: 2 rows)."""
    workdir = str(tmp_path)
    summary = train.run(cfg_for(workdir, "model=cnn", "sam=looksam", "sam.k=2",
                                "scale.max_steps=8", "scale.epochs=2",
                                "data.validation_split=validation"), workdir)
    assert summary["status"] == "completed"
    history = summary["history"]
    assert [row["step"] for row in history] == [4, 8]
    assert [row["epoch"] for row in history] == [1.0, 2.0]
    last = history[-1]
    assert last["validation_accuracy"] == summary["final_validation_accuracy"]
    assert last["test_accuracy"] == summary["final_test_accuracy"]
    assert summary["best_validation_accuracy"] == max(r["validation_accuracy"] for r in history)
    # Mock splits are generated per split name: validation and test are different images.
    assert last["validation_loss"] != last["test_loss"]
    # LookSAM's g_v drift between SAM steps (steps 0, 2, 4, 6; measured from step 2 on).
    assert -1 <= last["g_v_cos_prev"] <= 1 and last["g_v_change"] > 0


def test_history_keeps_esam_subset_losses_for_figure5(tmp_path):
    """The committed evidence has no event files, so the history keeps ESAM Figure 5's subset
    losses. SDS selects B+ as the examples of largest sharpness s_i = l_i(w + eps) - l_i(w), so
    at every step mean_B+(s) >= mean_B-(s); a window's means keep that order."""
    workdir = str(tmp_path)
    summary = train.run(cfg_for(workdir, "model=cnn", "sam=esam", "sam.beta=0.6", "sam.gamma=0.5",
                                "scale.max_steps=8", "scale.epochs=2"), workdir)
    assert summary["status"] == "completed"
    assert [row["epoch"] for row in summary["history"]] == [1.0, 2.0]
    for row in summary["history"]:
        sharpness_selected = row["esam_loss_selected_sam"] - row["esam_loss_selected_empirical"]
        sharpness_rejected = row["esam_loss_rejected_sam"] - row["esam_loss_rejected_empirical"]
        assert sharpness_selected >= sharpness_rejected - 1e-6, row
        assert all(np.isfinite(row[k]) for k in row if k.startswith("esam_loss_"))


def test_validation_split_must_not_overlap_training(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    data = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds"
    if not (data / "cifar10").is_dir():
        pytest.skip(f"real CIFAR-10 not found at {data}")
    cfg = cfg_for(str(tmp_path), "scale=afternoon", f"data.data_dir={data}",
                  "scale.validation_split='train[2000:3000]'")
    with pytest.raises(ValueError, match=r"shares 500 examples with data.train_split='train\[:2500\]'"):
        train.run(cfg, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("method,overrides,warnings", [
    ("none", ["sam.k=0"], ["sam.k has no effect with sam.method=none (it takes: nothing)"]),
    ("none", ["sam.k=5"], []),  # the default: nothing was asked for
    ("looksam", ["sam.k=3", "sam.beta=0.5", "trainer.seed=2"],
     ["sam.beta has no effect with sam.method=looksam (it takes: adaptive, alpha, batchnorm, "
      "drift_interval, k, m, rho)"]),
    ("esam", ["sam.beta=0.5", "sam.selection=official"], []),
])
def test_a_sam_setting_the_method_ignores_warns_naming_both(tmp_path, method, overrides, warnings):
    cfg = cfg_for(str(tmp_path), f"sam={method}", *overrides)
    assert config.ignored_sam_settings(cfg, [f"sam={method}", *overrides]) == warnings


def test_a_progress_line_every_30_seconds_leaves_the_recorded_metrics_alone(tmp_path, monkeypatch):
    """With the clock's threshold at 0 every step prints a line though log_every_steps is 100;
    what the run records (train loss, the TensorBoard scalars) is the same as without."""
    common = ("scale.log_every_steps=100", "logger=disabled")
    with trainer_log() as lines:
        monkeypatch.setattr(train, "PROGRESS_SECONDS", 0.0)
        chatty = train.run(cfg_for(str(tmp_path / "a"), *common), str(tmp_path / "a"))
        steps_a = [m.split()[1] for m in lines if m.startswith("step ")]
        lines.clear()
        monkeypatch.setattr(train, "PROGRESS_SECONDS", 1e9)
        quiet = train.run(cfg_for(str(tmp_path / "b"), *common), str(tmp_path / "b"))
        steps_b = [m.split()[1] for m in lines if m.startswith("step ")]
    assert steps_a == ["1/4", "2/4", "3/4", "4/4"] and steps_b == ["4/4"]
    assert chatty["final_train_loss"] == quiet["final_train_loss"]
    assert chatty["history"] == quiet["history"]


def test_the_signal_handler_leaves_logging_to_the_loop(caplog, capfd):
    """A signal can land while a logging handler is flushing train.log; logging again from the
    handler then fails ("reentrant call inside BufferedWriter", seen in CI). So the handler only
    writes to fd 2 and the loop logs the notice, once, at the step it checkpoints."""
    import signal

    notice = train.PreemptionNotice()
    try:
        with caplog.at_level(logging.WARNING, logger="looksam.train"):
            notice._on_signal(signal.SIGINT, None)
            assert caplog.records == []
            assert "Ctrl-C: saving a checkpoint" in capfd.readouterr().err
            assert notice(7) and notice(8)
        assert [r.getMessage() for r in caplog.records] == ["Ctrl-C: saving a checkpoint at step 7"]
    finally:
        notice.close()


def test_a_second_ctrl_c_stops_at_once_and_the_first_exits_130(monkeypatch):
    """Two Ctrl-Cs in a row reach a process as one signal, so the handler is driven directly: the
    first asks for a checkpoint, the second exits at once with 130; after the checkpoint the first
    ends the run with SystemExit(130), not Python's KeyboardInterrupt."""
    import signal

    exits = []
    monkeypatch.setattr(train.os, "_exit", exits.append)
    before = signal.getsignal(signal.SIGINT)  # Python's default; SIG_IGN in a background job
    notice = train.PreemptionNotice()
    try:
        assert signal.getsignal(signal.SIGINT) == notice._on_signal
        notice._on_signal(signal.SIGINT, None)
        assert notice(7) and notice.reason == "Ctrl-C" and exits == []
        notice._on_signal(signal.SIGINT, None)
        assert exits == [130]
        with pytest.raises(SystemExit) as info:
            notice.forward()
        assert info.value.code == 130
    finally:
        notice.close()
    assert signal.getsignal(signal.SIGINT) is before  # the handler it replaced is back
