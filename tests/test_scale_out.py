"""Scale-out and fault tolerance, end to end through `python -m looksam.train` subprocesses:
two processes equal one, SIGKILL then restart equals a straight run, SIGTERM checkpoints, a
microbatched batch equals the whole batch, and a full disk fails at the start."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
from test_train import assert_trees_close, cfg_for, final_state

from looksam import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A short run: 3 mock epochs of 4 steps, a checkpoint every 2 steps, a log line every step.
CHAOS = ["scale=smoke", "logger=disabled", "sam=looksam", "sam.k=2", "scale.epochs=3",
         "scale.max_steps=12", "trainer.checkpoint_every_steps=2", "trainer.log_every_steps=1"]
# Same seed, three kill points in 2..11: "a random step", reproducibly.
KILL_STEPS = sorted(random.Random(6).sample(range(2, 12), 3))
DETERMINISTIC = ("status", "step", "final_test_accuracy", "final_test_loss", "best_test_accuracy",
                 "final_train_loss", "cost")


def env(devices: int) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", WANDB_MODE="disabled",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONUNBUFFERED="1")


def trainer(workdir, *overrides, devices=2) -> subprocess.Popen:
    command = [sys.executable, "-m", "looksam.train", f"trainer.workdir={workdir}", *overrides]
    return subprocess.Popen(command, cwd=ROOT, env=env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def train_to_end(workdir, *overrides, devices=2, resumes=None) -> dict:
    proc = trainer(workdir, *overrides, devices=devices)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    if resumes == 0:  # nothing complete to resume from: a fresh start over any remains
        assert "resuming from step" not in out, out[-3000:]
    elif resumes is not None:
        assert f"resuming from step {resumes} " in out, out[-3000:]
    return json.loads(pathlib.Path(workdir, "summary.json").read_text())


def run_until(proc, step: int) -> str:
    """Reads the run's output until its progress line for `step` (or later) appears."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if " step " in line and "/" in line:
            done = int(line.split(" step ")[1].split("/")[0])
            if done >= step:
                return "".join(seen)
    raise AssertionError(f"the run ended before step {step}:\n" + "".join(seen)[-3000:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "run"
    return workdir, train_to_end(workdir, *CHAOS)


def assert_same_run(workdir, summary, reference):
    ref_dir, ref_summary = reference
    assert_trees_close(final_state(workdir, 12), final_state(ref_dir, 12))
    for key in DETERMINISTIC:
        expected = ref_summary[key]
        if not isinstance(expected, str):
            expected = pytest.approx(expected, rel=1e-5)
        assert summary[key] == expected, key


# ---- multi-host ----------------------------------------------------------------------------------

@pytest.mark.slow  # 67 s on 2 cores: `make test` stays under its 15 minutes; CI runs it
def test_two_processes_equal_one(tmp_path):
    """2 processes x 2 CPU devices, talking through gloo, against 1 process x 4 devices: the same
    global batches (data.input_shards=2 in both) give the same parameters."""
    common = ["scale=smoke", "logger=disabled", "sam=sam", "data.input_shards=2"]
    one = train_to_end(tmp_path / "one", *common, devices=4)
    address = f"localhost:{free_port()}"
    procs = [trainer(tmp_path / "two", *common, f"distributed.coordinator_address={address}",
                     "distributed.num_processes=2", f"distributed.process_id={i}") for i in (0, 1)]
    outs = [finish(p) for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "process 0 of 2: 2 local of 4 devices" in outs[0]
    assert "step 4/4" in outs[0] and "step 4/4" not in outs[1]  # process 0 alone reports
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["hardware"]["process_count"] == 2 and two["hardware"]["device_count"] == 4
    assert one["hardware"]["process_count"] == 1 and one["hardware"]["device_count"] == 4
    assert_trees_close(final_state(tmp_path / "one", 4), final_state(tmp_path / "two", 4))
    for key in ("final_test_accuracy", "final_test_loss", "final_train_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


# ---- fault tolerance -----------------------------------------------------------------------------

# All slow (`make test-slow`, which CI runs) so that `make test` stays under 15 minutes; the default
# suite keeps tests/test_train.py's in-process resume-equals-a-straight-run.
@pytest.mark.slow
@pytest.mark.parametrize("kill_step", KILL_STEPS)
def test_sigkill_then_rerun_equals_a_straight_run(tmp_path, straight, kill_step):
    workdir = tmp_path / "killed"
    proc = trainer(workdir, *CHAOS)
    run_until(proc, kill_step)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: possibly in the middle of a save
    proc.wait(timeout=60)
    assert not (workdir / "summary.json").exists()
    # The newest complete checkpoint (none when the kill beat the first asynchronous save to its
    # commit file); a save the kill interrupted does not count.
    complete = [int(p.parent.name) for p in (workdir / "checkpoints").glob("*/commit_success.txt")]
    summary = train_to_end(workdir, *CHAOS, resumes=max(complete, default=0))  # the same command
    assert_same_run(workdir, summary, straight)


@pytest.mark.slow  # 73 s on 2 cores; the SIGKILL case above keeps resuming in `make test`
def test_sigterm_checkpoints_then_rerun_finishes_the_same_run(tmp_path, straight):
    workdir = tmp_path / "preempted"
    proc = trainer(workdir, *CHAOS)
    run_until(proc, 3)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    stopped = json.loads((workdir / "summary.json").read_text())
    assert stopped["status"] == "preempted" and 3 <= stopped["step"] < 12, stopped["message"]
    # The step it stopped at was checkpointed, odd as it is (the periodic ones are even).
    assert (workdir / "checkpoints" / str(stopped["step"]) / "commit_success.txt").exists()
    summary = train_to_end(workdir, *CHAOS, resumes=stopped["step"])
    assert_same_run(workdir, summary, straight)


@pytest.mark.slow  # like the SIGTERM case: make test-slow, which CI runs
def test_ctrl_c_checkpoints_then_rerun_finishes_the_same_run(tmp_path, straight):
    """SIGINT mid-run (steps 3-4, checkpoints every 2): one line naming the resume command, exit
    130, no traceback; the rerun ends as the uninterrupted run does."""
    workdir = tmp_path / "interrupted"
    proc = trainer(workdir, *CHAOS)
    run_until(proc, 3)
    proc.send_signal(signal.SIGINT)
    out = finish(proc)
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    stopped = json.loads((workdir / "summary.json").read_text())
    assert stopped["status"] == "preempted" and 3 <= stopped["step"] < 12, stopped["message"]
    assert f"stopped by Ctrl-C after step {stopped['step']} and checkpointed" in out
    assert "rerun the same command to resume: python -m looksam.train trainer.workdir=" in out
    assert (workdir / "checkpoints" / str(stopped["step"]) / "commit_success.txt").exists()
    summary = train_to_end(workdir, *CHAOS, resumes=stopped["step"])
    assert_same_run(workdir, summary, straight)


SUBMITIT_LIKE = """
import pathlib, signal, sys
def requeue(signum, frame):  # what submitit's handler does: requeue the job, then exit
    pathlib.Path(marker).write_text("requeued")
    sys.exit(7)
signal.signal(signal.SIGUSR2, requeue)
marker, sys.argv = sys.argv[1], ["looksam.train", *sys.argv[2:]]
from looksam import train
train.main()
"""


@pytest.mark.slow
def test_sigusr2_checkpoints_then_hands_the_signal_to_the_previous_handler(tmp_path):
    """submitit's notice ahead of a SLURM time limit: save this step, then let submitit requeue."""
    workdir, marker = tmp_path / "usr2", tmp_path / "requeued"
    proc = subprocess.Popen([sys.executable, "-c", SUBMITIT_LIKE, str(marker),
                             f"trainer.workdir={workdir}", *CHAOS], cwd=ROOT, env=env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_until(proc, 3)
    proc.send_signal(signal.SIGUSR2)
    out = finish(proc)
    assert proc.returncode == 7 and marker.read_text() == "requeued", out[-3000:]
    stopped = json.loads((workdir / "summary.json").read_text())
    assert stopped["status"] == "preempted"
    assert (workdir / "checkpoints" / str(stopped["step"]) / "commit_success.txt").exists()


def test_disk_too_small_for_the_checkpoints_fails_at_the_start(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1024))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"MiB free.*keep_checkpoints"):
        train.run(cfg_for(str(tmp_path / "run")), str(tmp_path / "run"))
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "run" / "summary.json").exists()


# ---- large batch ---------------------------------------------------------------------------------

# sam's is slow (`make test-slow`, CI): `make test` stays under 15 minutes with esam's, the harder case.
@pytest.mark.parametrize("method", [pytest.param("sam", marks=pytest.mark.slow), "esam"])
def test_four_microbatches_equal_the_whole_batch(tmp_path, method):
    """trainer.microbatch=2 on the smoke batch of 8: four accumulated chunks give the parameters
    of the one-batch run (a ViT: LayerNorm only, so no per-chunk BatchNorm statistics)."""
    common = ["model=vit_s16", f"sam={method}", "trainer.num_devices=2"]
    whole, chunked = str(tmp_path / "whole"), str(tmp_path / "chunked")
    s1 = train.run(cfg_for(whole, *common), whole)
    s4 = train.run(cfg_for(chunked, *common, "trainer.microbatch=2"), chunked)
    assert s4["config"]["trainer"]["microbatch"] == 2 and s1["config"]["trainer"]["microbatch"] is None
    assert_trees_close(final_state(whole, 4), final_state(chunked, 4), rtol=1e-4, atol=1e-6)
    assert s4["final_train_loss"] == pytest.approx(s1["final_train_loss"], rel=1e-5)


# ---- the pieces ----------------------------------------------------------------------------------

def test_input_shards_make_the_global_batch_independent_of_the_process_count():
    import numpy as np

    from looksam.data import pipeline

    def batches(index, count, shards=2, steps=3, start_step=0):
        ds = pipeline.train_dataset("cifar10", global_batch=8, seed=3, synthetic=32, shards=shards,
                                    process_index=index, process_count=count, mixup_alpha=0.4,
                                    start_step=start_step)
        return list(pipeline.as_numpy(ds.take(steps)))

    one = batches(0, 1)
    halves = [batches(0, 2), batches(1, 2)]
    for step, whole in enumerate(one):
        for key in ("image", "label"):
            assert whole[key].shape[0] == 8
            np.testing.assert_array_equal(
                whole[key], np.concatenate([halves[0][step][key], halves[1][step][key]]))
    # The two shards are different examples with different augmentations.
    assert not np.allclose(halves[0][0]["image"], halves[1][0]["image"])
    # Resuming at step 2 of the two-shard stream.
    np.testing.assert_array_equal(batches(0, 1, start_step=2, steps=1)[0]["image"], one[2]["image"])
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        batches(0, 2, shards=3)


def test_distributed_is_initialised_only_when_a_job_has_several_processes():
    from omegaconf import OmegaConf

    from looksam import config, distributed

    def dist(**kw):
        return OmegaConf.merge(OmegaConf.structured(config.DistributedConfig), kw)

    assert not distributed.wanted(dist(), environ={})
    assert not distributed.wanted(dist(), environ={"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"})
    assert not distributed.wanted(dist(), environ={"SLURM_NTASKS": "8"})  # the batch script itself
    assert distributed.wanted(dist(), environ={"SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"})
    assert distributed.wanted(dist(coordinator_address="h:1", num_processes=2, process_id=0), {})
    assert distributed.wanted(dist(enabled="true"), environ={})  # a TPU pod: JAX finds the workers
    assert not distributed.wanted(dist(enabled="false"), {"SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"})


@pytest.mark.parametrize("override, message", [
    ("distributed.coordinator_address=localhost:1234", "together"),
    ("distributed.enabled=sometimes", "auto, true or false"),
    ("data.input_shards=0", ">= 1"),
    ("trainer.workdir=gs://bucket/run", "gcsfuse"),
])
def test_bad_distributed_settings_fail_before_compiling(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train.run(cfg_for(str(tmp_path), override), str(tmp_path))
