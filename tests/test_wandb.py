"""wandb as the tables use it: a cell run's group, name, job type and tags, the render's wandb Tables,
wandb's console kept quiet, and `collect_wandb`'s groups (docs/wandb.md).

Offline and disabled runs only, never the network: HOME, the wandb directories and the key are
redirected or removed for every test. What a run recorded is read back from its offline run file
(tests/wandb_files.py), so the checks see what `wandb sync` would upload.
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import wandb
import wandb_files
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from wandb_files import logged_table, offline_run

from looksam import config as config_lib
from looksam import tracking
from reproduce import __main__ as driver
from reproduce import registry
from results import __main__ as cli
from results import collect, tables, wandb_log

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = "looksam_iclr_cifar10"
# A cell of a reading other than the paper's, as the driver's generated config and the scale set it.
CELL_CONFIG = {"table": "esam_table1", "cell": "resnet18_cifar10/esam", "reading": "code", "variant": None,
               "trainer": {"seed": 2}, "scale": {"name": "smoke"}, "model": {"name": "resnet18"},
               "sam": {"method": "esam"}, "optimizer": {"name": "sgd"}}
CELL_TAGS = ["scale:smoke", "model:resnet18", "method:esam", "optimizer:sgd"]


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """No key, no netrc, no settings from the real home; wandb's own files under tmp_path; wandb's
    console left to looksam's default (neither WANDB_SILENT nor LOOKSAM_VERBOSE)."""
    home = wandb_files.isolate(monkeypatch, tmp_path, unset=(
        "WANDB_SILENT", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE",
        "WANDB_TAGS", "WANDB_NAME", tracking.VERBOSE_ENV))
    yield home
    assert wandb.run is None, "a test left a wandb run open"


# ---- a training run's group, name, job type and tags ---------------------------------------------

def test_run_labels_of_a_cell_and_of_a_plain_run():
    assert tracking.run_labels(CELL_CONFIG) == {
        "group": "esam_table1/smoke/code", "job_type": "resnet18_cifar10/esam",
        "name": "resnet18_cifar10/esam/seed2", "tags": CELL_TAGS}
    paper = {**CELL_CONFIG, "reading": None, "variant": "sam.rho=0.1"}  # a sweep point of the paper's
    labels = tracking.run_labels(paper)
    assert labels["group"] == "esam_table1/smoke"
    assert labels["name"] == "resnet18_cifar10/esam/sam.rho=0.1/seed2"  # its run directory's layout
    plain = {"model": {"name": "cnn"}, "sam": {"method": "none"}, "scale": {"name": "cpu"}}
    assert tracking.run_labels(plain) == {"group": None, "name": None, "job_type": None,
                                          "tags": ["scale:cpu", "model:cnn", "method:none"]}
    assert tracking.group_name("t", "cpu") == "t/cpu"
    assert tracking.group_name("t", "cpu", "code") == "t/cpu/code"


def test_the_offline_run_file_holds_the_cells_group_name_job_type_and_tags(tmp_path):
    with tracking.Tracker(str(tmp_path / "job"), CELL_CONFIG, mode="offline", project="looksam-test",
                          entity=None, group=None, tags=["rerun"], name=None, resume_id=None,
                          tensorboard=False) as tracker:
        tracker.scalars(1, {"train/loss": 1.0})
    _, run, _ = offline_run(tmp_path / "job")
    assert run.run_id == tracker.run_id and run.project == "looksam-test"
    assert run.run_group == "esam_table1/smoke/code"
    assert run.job_type == "resnet18_cifar10/esam"
    assert run.display_name == "resnet18_cifar10/esam/seed2"
    assert list(run.tags) == [*CELL_TAGS, "rerun"]  # the config's tags, then logger.tags


def test_an_explicit_group_and_name_win(tmp_path):
    with tracking.Tracker(str(tmp_path), CELL_CONFIG, mode="offline", project="looksam-test", entity=None,
                          group="my-sweep", tags=["scale:smoke"], name="try1", resume_id=None,
                          tensorboard=False, job_type="probe"):
        pass
    _, run, _ = offline_run(tmp_path)
    assert (run.run_group, run.display_name, run.job_type) == ("my-sweep", "try1", "probe")
    assert list(run.tags) == CELL_TAGS  # a tag given twice is kept once


def test_the_driver_group_is_the_one_the_composed_config_implies(tmp_path, capsys):
    """`reproduce run` leaves logger.group unset: a job's group, name, job type and tags come from
    the config it composes from its generated cell file, <table>/<scale>/<reading> here."""
    assert driver.main(["run", "esam_table1", "--scale", "smoke", "--reading", "code", "--runs",
                        str(tmp_path), "--cells", "resnet18_cifar10/esam", "--seeds", "1", "--dry-run"]) == 0
    assert "logger.group=" not in capsys.readouterr().out
    gen = tmp_path / "esam_table1" / "smoke" / "reading-code" / ".cells"
    config_lib.register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["+reproduce_cell=resnet18_cifar10__esam__seed0", "scale=smoke",
                                           f"hydra.searchpath=[file://{gen}]"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    labels = tracking.run_labels(resolved)
    assert resolved["logger"]["group"] is None and labels["group"] == "esam_table1/smoke/code"
    assert labels["job_type"] == "resnet18_cifar10/esam" and labels["name"] == "resnet18_cifar10/esam/seed0"
    assert labels["tags"] == ["scale:smoke", "model:resnet18", "method:esam", "optimizer:sgd"]
    assert tracking.run_labels({**resolved, "reading": None})["group"] == "esam_table1/smoke"


# ---- wandb's console --------------------------------------------------------------------------------

def _wandb_lines(text):
    return [line for line in text.splitlines() if line.startswith("wandb:")]


def test_wandb_is_quiet_unless_asked(tmp_path, monkeypatch, capfd):
    # wandb sets its console up once per process, from the first run's settings: a run of another
    # test in this worker (test_tracking.py's, under WANDB_SILENT) would silence both runs here.
    wandb.teardown()

    def one_run(workdir):
        wandb.teardown()  # each run sets wandb up afresh, as a new job process does
        with tracking.Tracker(str(workdir), CELL_CONFIG, mode="offline", project="looksam-test", entity=None,
                              group=None, tags=[], name=None, resume_id=None, tensorboard=False) as tracker:
            tracker.scalars(1, {"train/loss": 1.0})
        captured = capfd.readouterr()
        return _wandb_lines(captured.out + captured.err)

    quiet = one_run(tmp_path / "quiet")
    assert not [line for line in quiet if "WARNING" not in line and "ERROR" not in line], quiet
    monkeypatch.setenv(tracking.VERBOSE_ENV, "1")
    verbose = one_run(tmp_path / "verbose")
    assert any("Run history" in line for line in verbose) and len(verbose) > 10, verbose


# ---- python -m results render --wandb-log ---------------------------------------------------------

SGD, SAM = [0.80, 0.81], [0.90, 0.92]


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    for column, accuracies in (("sgd", SGD), ("sam", SAM)):
        for seed, acc in enumerate(accuracies):
            d = runs / TABLE / "cpu" / "resnet18" / column / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(
                {"status": "completed", "best_test_accuracy": acc, "final_test_accuracy": acc}))
    return runs


def _mean_std(values):
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_render_logs_the_cells_and_claims_as_wandb_tables(runs, tmp_path, capsys):
    out = tmp_path / "renders"
    assert cli.main(["render", TABLE, "--runs", str(runs), "--scale", "cpu", "--out", str(out),
                     "--wandb-log", "--wandb-mode", "offline"]) == 0
    report = capsys.readouterr()
    run_dir, run, history = offline_run(out)
    assert f"wandb sync {run_dir}" in report.err
    assert (run.run_group, run.job_type, run.project) == (f"{TABLE}/cpu", "render", "looksam")
    assert list(run.tags) == ["render", "scale:cpu"]

    table = registry.load(TABLE)
    cells = {(r["cell"], r["metric"]): r for r in logged_table(run_dir, history, "cells")}
    assert len(cells) == len(table.cells) * len(table.metrics)
    sgd = cells[("resnet18/sgd", "Top-1 (%)")]
    mean, std = _mean_std(SGD)
    assert (sgd["row"], sgd["column"], sgd["n"], sgd["status"]) == ("ResNet-18", "SGD-M", 2, "completed")
    assert math.isclose(sgd["ours mean"], 100 * mean) and math.isclose(sgd["ours std"], 100 * std)
    assert sgd["paper"] == 95.6  # reproduce/tables/looksam_iclr_cifar10.yaml
    missing = cells[("resnet50/sam", "Top-1 (%)")]
    assert (missing["ours mean"], missing["n"], missing["status"]) == (None, 0, "missing")
    assert missing["paper"] == 96.9

    claims = logged_table(run_dir, history, "claims")
    sam_vs_sgd = [r for r in claims if r["claim"] == "sam_improves_on_sgd"]
    assert [r["where"] for r in sam_vs_sgd] == ["WRN-28-10", "ResNet-18", "ResNet-50"]
    at_r18 = sam_vs_sgd[1]
    # d = mean(SAM) - mean(SGD); SE^2 = s_sam^2/2 + s_sgd^2/2 (claims.py); 2 SE far below d: holds.
    d = _mean_std(SAM)[0] - _mean_std(SGD)[0]
    two_se = 2 * math.sqrt(_mean_std(SAM)[1] ** 2 / 2 + _mean_std(SGD)[1] ** 2 / 2)
    assert (at_r18["lhs"], at_r18["rhs"], at_r18["verdict"]) == ("resnet18/sam", "resnet18/sgd", "holds")
    assert math.isclose(at_r18["d"], 100 * d) and math.isclose(at_r18["2 SE"], 100 * two_se)
    assert sam_vs_sgd[0]["verdict"] == "missing" and sam_vs_sgd[0]["d"] is None
    # The dashboard's verdicts are the report's, row for row.
    results = collect.collect(table, runs, "cpu")
    assert [r["verdict"] for r in claims] == [row[-1] for row in tables.claim_rows(table, results)]
    assert history["_step"] == 0


def test_render_wandb_log_follows_wandb_mode_and_reports_a_failure(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "renders"
    assert cli.main(["render", TABLE, "--runs", str(runs), "--scale", "cpu", "--out", str(out),
                     "--wandb-log"]) == 0
    assert "wandb is disabled" in capsys.readouterr().err
    assert not (out / "wandb").exists() and not (tmp_path / "wandb_home").exists()

    def no_network(**kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setattr(wandb, "init", no_network)
    assert cli.main(["render", TABLE, "--runs", str(runs), "--scale", "cpu", "--out", str(out),
                     "--wandb-log", "--wandb-mode", "online"]) == 1  # the files are written, the log failed
    assert "no network" in capsys.readouterr().err and (out / f"{TABLE}_cpu.md").exists()
    assert wandb_log.split_project("ent/proj") == ("ent", "proj")
    assert wandb_log.split_project("proj") == (None, "proj")
    assert wandb_log.split_project(None) == (None, "looksam")


# ---- collect_wandb finds the new groups and the old ----------------------------------------------

def test_collect_wandb_reads_a_readings_group_and_old_table_groups():
    table = registry.load("esam_table1", reading="code")
    cell = "resnet18_cifar10/esam"

    class Run:
        def __init__(self, seed, reading, acc):
            self.config = {"table": "esam_table1", "cell": cell, "trainer": {"seed": seed},
                           "scale": {"name": "cpu"}, "reading": reading}
            self.summary, self.state = {"status": "completed", "final_test_accuracy": acc}, "finished"

    class Api:
        def runs(self, path, filters):
            assert filters == {"$or": [{"group": "esam_table1/cpu/code"}, {"group": "esam_table1"}]}
            return [Run(0, "code", 0.5), Run(1, None, 0.9)]  # the paper's reading: another group

    results = collect.collect_wandb(table, "e/p", "cpu", api=Api())
    assert results[cell].values["final_test_accuracy"] == [0.5]
