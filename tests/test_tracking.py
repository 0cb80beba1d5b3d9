"""looksam.tracking: wandb mode resolution, TensorBoard + offline wandb files, run lifecycle.

Nothing here touches the network: HOME, the wandb directories and the key are redirected or
removed for every test, and wandb runs are offline or disabled.
"""

import glob
import json
import os
import re

import pytest
import wandb
import wandb_files
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from looksam import tracking

CONFIG = {"model": {"name": "cnn", "kwargs": {"widths": [16, 32]}}, "sam": {"method": "looksam", "k": 5}}


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """No key, no netrc, no settings from the real home; wandb's own files under tmp_path."""
    home = wandb_files.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield home
    assert wandb.run is None, "a test left a wandb run open"


def make_tracker(workdir, *, mode="offline", resume_id=None, **kwargs):
    kwargs = {"project": "looksam-test", "entity": None, "group": "g", "tags": ["test"], "name": None,
              **kwargs}
    return tracking.Tracker(str(workdir), CONFIG, mode=mode, resume_id=resume_id, **kwargs)


def run_dirs(workdir):
    return glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))


def is_run_dir_of(path, run_id):
    # offline-run-<date>_<time>-<id>, with "-1", "-2", ... when two start within one second.
    return re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", os.path.basename(path))


def tb_scalars(workdir, tag):
    """(step, value) pairs of a scalar in the TensorBoard event files (TF2 writes them as tensors)."""
    acc = event_accumulator.EventAccumulator(str(workdir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)], acc


def spy_finish(tracker, monkeypatch):
    """Records the exit codes handed to the wandb run's finish (then finishes it for real)."""
    calls, run = [], tracker._run
    finish = run.finish

    def spy(*args, **kwargs):
        calls.append(kwargs.get("exit_code"))
        return finish(*args, **kwargs)

    monkeypatch.setattr(run, "finish", spy)
    return calls


# --- wandb_mode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_wandb_mode_explicit(mode, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode(mode) == mode


def test_wandb_mode_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="'onlien'"):
        tracking.wandb_mode("onlien")


def test_wandb_mode_automatic(offline_wandb, monkeypatch):
    assert tracking.wandb_mode(None) == "offline"  # no key anywhere
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_API_KEY", "")
    assert tracking.wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # wandb's own variable still wins over the key
    assert tracking.wandb_mode(None) == "disabled"


def test_wandb_mode_from_netrc(offline_wandb):
    netrc = offline_wandb / ".netrc"
    netrc.write_text("machine example.com login user password secret\n")
    netrc.chmod(0o600)
    assert tracking.wandb_mode(None) == "offline"  # an entry, but not for W&B
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert tracking.wandb_mode(None) == "online"
    netrc.write_text("machine api.wandb.ai login\n")  # malformed: no crash, no key
    assert tracking.wandb_mode(None) == "offline"


# --- Tracker -------------------------------------------------------------------------------------

def test_offline_run_writes_tensorboard_and_wandb_files(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    tracker = make_tracker(workdir)
    assert tracker.mode == "offline" and tracker.run_id
    logged = []
    log = tracker._run.log
    monkeypatch.setattr(tracker._run, "log", lambda data, **kw: (logged.append(data), log(data, **kw)))
    tracker.hparams({"sam.method": "looksam", "sam.k": 5, "sam.m": None, "model.widths": [16, 32]})
    tracker.scalars(5, {"train/loss": 0.5})
    tracker.scalars(10, {"train/loss": 0.25, "eval/accuracy": 0.75})
    tracker.summary({"best_accuracy": 0.75})
    tracker.finish("completed")

    assert tracker.status == "completed"
    assert logged == [{"step": 5, "train/loss": 0.5}, {"step": 10, "train/loss": 0.25, "eval/accuracy": 0.75}]
    loss, acc = tb_scalars(workdir, "train/loss")
    assert loss == [(5, 0.5), (10, 0.25)]
    assert tb_scalars(workdir, "eval/accuracy")[0] == [(10, 0.75)]
    assert acc.PluginTagToContent("hparams")  # the config reached TensorBoard's hparams plugin

    [run_dir] = run_dirs(workdir)
    assert is_run_dir_of(run_dir, tracker.run_id)
    run_file = os.path.join(run_dir, f"run-{tracker.run_id}.wandb")
    # The offline record stream, once wandb's service has written it (it may lag run.finish()).
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in wandb_files.finished_records(run_file) if r.WhichOneof("record_type") == "history"]
    assert [(h["step"], h["train/loss"]) for h in history if "train/loss" in h] == [(5, 0.5), (10, 0.25)]


def test_resume_id_reuses_the_run_and_trackers_run_in_sequence(tmp_path):
    """A Hydra multirun: several jobs, each with its own Tracker, in one process."""
    with make_tracker(tmp_path / "a") as first:
        first.scalars(1, {"train/loss": 1.0})
        first.finish("completed")
    with make_tracker(tmp_path / "b") as second:  # the next job starts its own run
        assert second.run_id and second.run_id != first.run_id
        second.scalars(1, {"train/loss": 2.0})
        second.finish("completed")
    with make_tracker(tmp_path / "a", resume_id=first.run_id) as resumed:  # a restart of job a
        assert resumed.run_id == first.run_id
        resumed.scalars(2, {"train/loss": 0.5})
        resumed.finish("completed")
    assert len(run_dirs(tmp_path / "a")) == 2
    assert all(is_run_dir_of(d, first.run_id) for d in run_dirs(tmp_path / "a"))
    assert tb_scalars(tmp_path / "b", "train/loss")[0] == [(1, 2.0)]


def test_finish_is_idempotent(tmp_path, monkeypatch):
    tracker = make_tracker(tmp_path)
    calls = spy_finish(tracker, monkeypatch)
    tracker.finish("diverged")
    tracker.finish("completed")
    tracker.__exit__(None, None, None)
    assert tracker.status == "diverged"
    assert calls == [1]  # every status but "completed" is a failed wandb run


def test_context_manager_finishes_as_failed_on_an_exception(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="boom"):
        with make_tracker(tmp_path) as tracker:
            calls = spy_finish(tracker, monkeypatch)
            tracker.scalars(1, {"train/loss": 1.0})
            raise RuntimeError("boom")
    assert tracker.status == "failed"
    assert calls == [1]
    with make_tracker(tmp_path / "next") as tracker:  # the next job starts cleanly
        calls = spy_finish(tracker, monkeypatch)
    assert tracker.status == "completed" and calls == [0]


def test_disabled_mode_writes_no_wandb_files(tmp_path):
    with make_tracker(tmp_path, mode="disabled", resume_id="keepme1") as tracker:
        tracker.scalars(3, {"train/loss": 0.125})
        tracker.summary({"best_accuracy": 0.5})
    assert tracker._run is None
    assert tracker.run_id == "keepme1"  # still stored with the checkpoints, for a later resume
    assert not os.path.exists(tmp_path / "wandb") and not os.path.exists(tmp_path / "wandb_home")
    assert tb_scalars(tmp_path, "train/loss")[0] == [(3, 0.125)]


def test_a_failing_wandb_init_does_not_stop_training(tmp_path, monkeypatch):
    def no_network(**kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setattr(wandb, "init", no_network)
    with make_tracker(tmp_path, mode="online") as tracker:
        tracker.scalars(1, {"train/loss": 1.0})
        tracker.summary({"best_accuracy": 0.5})
    assert tracker._run is None and tracker.status == "completed"
    assert tb_scalars(tmp_path, "train/loss")[0] == [(1, 1.0)]


def test_other_processes_only_log_to_the_console(tmp_path):
    with make_tracker(tmp_path / "run", is_main=False) as tracker:
        tracker.scalars(1, {"train/loss": 1.0})
        tracker.hparams({"a": 1})
    assert tracker._run is None and tracker.run_id is None
    assert not os.path.exists(tmp_path / "run")  # neither TensorBoard nor wandb files
