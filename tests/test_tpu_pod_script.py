"""scripts/tpu_pod.sh with DRY_RUN=1: the gcloud commands it would run (no gcloud, no JAX)."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "tpu_pod.sh"
BASE_ENV = {"TPU_NAME": "looksam-pod", "ZONE": "europe-west4-a", "DRY_RUN": "1", "BUCKET": "my-bucket"}
CLEARED = ("TPU_NAME", "ZONE", "DRY_RUN", "PROJECT", "ACCELERATOR", "TPU_VERSION", "PREEMPTIBLE",
           "SPOT", "WORKDIR", "WORKER", "FORWARD_ENV", "JAX_TPU_SPEC", "BUCKET", "MOUNT", "RUNS",
           "SHARED_WORKDIR_OK")
MOUNT_CHECK = ("set -e; if ! mountpoint -q /mnt/looksam; then sudo mkdir -p /mnt/looksam && "
               'sudo chown "$(id -u):$(id -g)" /mnt/looksam && '
               "gcsfuse --implicit-dirs my-bucket /mnt/looksam; fi")


def script(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED}
    environ.update({**BASE_ENV, **env})
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run(["bash", str(SCRIPT), *args], env=environ, capture_output=True, text=True,
                          timeout=30)


def commands(*args: str, **env: str) -> list[list[str]]:
    """The printed commands (`+ ...` lines), each split back into its words as a shell would."""
    proc = script(*args, **env)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


def gcloud(*args: str, **env: str) -> list[list[str]]:
    found = [c for c in commands(*args, **env) if c[0] == "gcloud"]
    assert found, f"no gcloud command for {args}"
    for c in found:
        assert c[1:4] == ["compute", "tpus", "tpu-vm"]
        assert c[c.index("--zone") + 1] == "europe-west4-a"
    return found


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def remote_words(cmd: list[str]) -> list[str]:
    """The words of the trainer's command line inside `--command` (after `cd ~/looksam && `)."""
    remote = option(cmd, "--command")
    assert "cd ~/looksam && " in remote
    return shlex.split(remote.split("cd ~/looksam && ", 1)[1])


def test_syntax():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_help_names_every_command():
    proc = script("--help")
    assert proc.returncode == 0
    for word in ("create", "setup", "mount", "run", "reproduce", "copy", "ssh", "delete", "--worker=all",
                 "distributed.enabled=true", "BUCKET=my-bucket", "gcsfuse --implicit-dirs",
                 "SHARED_WORKDIR_OK=1", "/mnt/looksam"):
        assert word in proc.stdout


def test_create():
    [cmd] = gcloud("create")
    assert cmd[4:6] == ["create", "looksam-pod"]
    assert option(cmd, "--accelerator-type") == "v3-128"
    assert option(cmd, "--version") == "tpu-ubuntu2204-base"
    assert "--preemptible" not in cmd and "--spot" not in cmd and "--project" not in cmd
    [cmd] = gcloud("create", PREEMPTIBLE="1", PROJECT="my-proj", ACCELERATOR="v4-32")
    assert "--preemptible" in cmd and option(cmd, "--project") == "my-proj"
    assert option(cmd, "--accelerator-type") == "v4-32"
    [cmd] = gcloud("create", SPOT="1")
    assert "--spot" in cmd


def test_setup_copies_a_tarball_and_installs_jax_tpu_on_every_worker():
    scp, ssh, _ = gcloud("setup")
    assert scp[4] == "scp" and "--worker=all" in scp
    assert scp[5].endswith("/looksam.tar.gz") and scp[6] == "looksam-pod:looksam.tar.gz"
    assert ssh[4:6] == ["ssh", "looksam-pod"] and "--worker=all" in ssh
    remote = option(ssh, "--command")
    assert "cd ~/looksam && make install" in remote
    pin = next(line for line in (SCRIPT.parents[1] / "pyproject.toml").read_text().splitlines()
               if line.strip().startswith('"jax>='))
    spec = pin.strip().strip('",').removeprefix("jax")
    assert f".venv/bin/pip install -U 'jax[tpu]{spec}'" in remote
    tar = next(c for c in commands("setup") if c[0] == "tar")
    assert "--exclude=.venv" in tar and "--exclude=.git" in tar


def test_setup_and_mount_mount_the_bucket_with_gcsfuse_on_every_worker():
    *_, ssh = gcloud("setup")
    [mount] = gcloud("mount", BUCKET="gs://my-bucket/")  # a gs:// prefix is dropped
    assert ssh == mount
    assert mount[4:6] == ["ssh", "looksam-pod"] and "--worker=all" in mount
    remote = option(mount, "--command")
    assert "if ! command -v gcsfuse >/dev/null; then" in remote  # installed only where missing
    assert "https://packages.cloud.google.com/apt $GCSFUSE_REPO main" in remote
    assert "apt-get install -y -qq gcsfuse" in remote
    assert remote.endswith(MOUNT_CHECK.removeprefix("set -e; "))
    [mount] = gcloud("mount", BUCKET="other", MOUNT="/data/gcs dir/")
    assert "gcsfuse --implicit-dirs other '/data/gcs dir'" in option(mount, "--command")
    # without BUCKET: setup mounts nothing (and says so), mount refuses
    assert len(gcloud("setup", BUCKET=None)) == 2
    assert "BUCKET is not set" in script("setup", BUCKET=None).stderr
    proc = script("mount", BUCKET=None)
    assert proc.returncode == 1 and "BUCKET" in proc.stderr and not proc.stdout
    proc = script("mount", BUCKET="my-bucket/runs")
    assert proc.returncode == 1 and "bucket name" in proc.stderr


def test_run_passes_overrides_verbatim_to_every_worker():
    overrides = ["model=vit_b16", "scale=paper", "logger.name=my run",
                 "logger.group=${trainer.seed}", "logger.tags=[it's,$HOME]", "trainer.microbatch=1024"]
    [cmd] = gcloud("run", "--", *overrides, WORKDIR="/mnt/looksam/vit b16")
    assert cmd[4:6] == ["ssh", "looksam-pod"] and "--worker=all" in cmd
    words = remote_words(cmd)
    assert words[:5] == [".venv/bin/python", "-m", "looksam.train", "distributed.enabled=true",
                         "trainer.workdir=/mnt/looksam/vit b16"]
    assert words[5:] == overrides


def test_run_workdir_defaults_under_the_mount_which_a_restarted_worker_remounts():
    [cmd] = gcloud("run")
    assert option(cmd, "--command").startswith(MOUNT_CHECK + "; cd ~/looksam && ")
    assert remote_words(cmd)[-1] == "trainer.workdir=/mnt/looksam/runs/looksam-pod"
    [cmd] = gcloud("run", MOUNT="/gcs/")
    assert remote_words(cmd)[-1] == "trainer.workdir=/gcs/runs/looksam-pod"


def test_run_without_bucket_fails_naming_bucket():
    for command in (["run", "--", "scale=paper"], ["reproduce", "looksam_table2"], ["copy"]):
        proc = script(*command, BUCKET=None)
        assert proc.returncode == 1 and not proc.stdout, command
        assert "BUCKET=" in proc.stderr and "every worker" in proc.stderr
        assert "SHARED_WORKDIR_OK=1" in proc.stderr
    proc = script("run", BUCKET=None, WORKDIR="/nfs/runs/vit")
    assert proc.returncode == 1 and "BUCKET=" in proc.stderr


def test_shared_workdir_ok_skips_the_check():
    [cmd] = gcloud("run", BUCKET=None, SHARED_WORKDIR_OK="1", WORKDIR="/nfs/runs/vit")
    remote = option(cmd, "--command")
    assert remote.startswith("cd ~/looksam && ") and "gcsfuse" not in remote
    assert remote_words(cmd)[-1] == "trainer.workdir=/nfs/runs/vit"
    [cmd] = gcloud("run", BUCKET=None, SHARED_WORKDIR_OK="1")  # e.g. a single-worker v3-8
    assert remote_words(cmd)[-1] == "trainer.workdir=runs/tpu/looksam-pod"
    [cmd] = gcloud("reproduce", "looksam_table2", BUCKET=None, SHARED_WORKDIR_OK="1", RUNS="/nfs/rep")
    assert remote_words(cmd)[5:8] == ["--scale", "paper", "--runs"] and remote_words(cmd)[8] == "/nfs/rep"


def test_a_workdir_outside_the_mount_fails():
    proc = script("run", WORKDIR="runs/tpu/vit")
    assert proc.returncode == 1 and "not under MOUNT=/mnt/looksam" in proc.stderr and not proc.stdout
    [cmd] = gcloud("run", WORKDIR="/nfs/vit", SHARED_WORKDIR_OK="1")
    assert remote_words(cmd)[-1] == "trainer.workdir=/nfs/vit"


@pytest.mark.parametrize("bucket", ["my-bucket", None])
def test_gs_workdir_fails_naming_the_mount(bucket):
    proc = script("run", "--", "scale=paper", WORKDIR="gs://my-bucket/looksam/vit", BUCKET=bucket,
                  SHARED_WORKDIR_OK="1")
    assert proc.returncode == 1 and not proc.stdout
    assert "gs://" in proc.stderr and "BUCKET=my-bucket" in proc.stderr
    assert "WORKDIR=/mnt/looksam/looksam/vit" in proc.stderr
    proc = script("reproduce", "looksam_table2", RUNS="gs://my-bucket/reproduce")
    assert proc.returncode == 1 and "RUNS=/mnt/looksam/reproduce" in proc.stderr


def test_forwarded_environment_is_exported_on_the_workers():
    [cmd] = gcloud("run", "--", "scale=paper", FORWARD_ENV="WANDB_MODE", WANDB_MODE="off line")
    remote = option(cmd, "--command")
    assert shlex.split(remote.split("cd ~/looksam && ", 1)[1].split(";", 1)[0]) == [
        "export", "WANDB_MODE=off line"]
    for command in (["run"], ["reproduce", "looksam_table2"]):
        proc = script(*command, FORWARD_ENV="LOOKSAM_UNSET_VARIABLE")
        assert proc.returncode == 1 and "LOOKSAM_UNSET_VARIABLE" in proc.stderr and not proc.stdout


def test_reproduce_runs_the_table_driver_on_every_worker_with_runs_under_the_mount():
    [cmd] = gcloud("reproduce", "looksam_table2", "--", "--seeds", "1", "--cells", "look_layersam/b4k",
                   "-o", "data.data_dir=gs://bucket/tfds dir")
    assert "--worker=all" in cmd
    assert option(cmd, "--command").startswith(MOUNT_CHECK + "; cd ~/looksam && ")
    assert remote_words(cmd) == [
        ".venv/bin/python", "-m", "reproduce", "run", "looksam_table2", "--scale", "paper",
        "--runs", "/mnt/looksam/reproduce", "--seeds", "1", "--cells", "look_layersam/b4k",
        "-o", "data.data_dir=gs://bucket/tfds dir", "-o", "distributed.enabled=true"]
    [cmd] = gcloud("reproduce", "looksam_table2", RUNS="/mnt/looksam/tables v2")
    assert remote_words(cmd)[7:9] == ["--runs", "/mnt/looksam/tables v2"]
    assert script("reproduce").returncode != 0


def test_copy_fetches_from_the_bucket():
    [cmd] = commands("copy")
    assert cmd == ["gsutil", "-m", "cp", "-r", "gs://my-bucket/runs/looksam-pod", "./runs/tpu/"]
    [cmd] = commands("copy", "runs")
    assert cmd == ["gsutil", "-m", "cp", "-r", "gs://my-bucket/reproduce", "./runs/tpu/"]
    [cmd] = commands("copy", WORKDIR="/mnt/looksam/vit b16")
    assert cmd[4] == "gs://my-bucket/vit b16"
    assert script("copy", "logs").returncode == 1


def test_copy_from_worker_0_for_a_shared_workdir():
    [cmd] = gcloud("copy", WORKDIR="runs/tpu/vit", BUCKET=None, SHARED_WORKDIR_OK="1")
    assert cmd[4] == "scp" and "--recurse" in cmd and "--worker=0" in cmd
    assert cmd[7:9] == ["looksam-pod:looksam/runs/tpu/vit", "./runs/tpu/"]
    [cmd] = gcloud("copy", WORKDIR="/data/vit", BUCKET=None, SHARED_WORKDIR_OK="1")
    assert "looksam-pod:/data/vit" in cmd


def test_ssh_and_delete():
    [cmd] = gcloud("ssh")
    assert cmd[4:6] == ["ssh", "looksam-pod"] and "--worker=0" in cmd and "--command" not in cmd
    [cmd] = gcloud("ssh", "--", "ls", "-la", WORKER="all")
    assert "--worker=all" in cmd and option(cmd, "--command") == "ls -la"
    [cmd] = gcloud("delete")
    assert cmd[4:6] == ["delete", "looksam-pod"] and "--quiet" in cmd


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE"])
def test_missing_environment_is_named(missing):
    proc = script("run", **{missing: None})
    assert proc.returncode != 0 and missing in proc.stderr and not proc.stdout


def test_unknown_command_exits_2_with_usage():
    proc = script("launch")
    assert proc.returncode == 2 and "unknown command 'launch'" in proc.stderr and "Usage:" in proc.stderr
    assert script().returncode == 2
