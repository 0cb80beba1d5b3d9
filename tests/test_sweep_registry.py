"""Sweeps through the registry (`reproduce run --sweep`): one job and run folder per point, only
pending points launched, bad input refused; `python -m results sweep` over one and two keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from test_reproduce import ROOT, composed

from reproduce import __main__ as driver
from reproduce import registry
from results import __main__ as results_cli
from results import sweep

TABLE = "looksam_iclr_cifar10"


def test_sweep_points_are_the_product():
    assert driver.sweep_points([]) == [(None, [])]
    points = driver.sweep_points(["sam.alpha=0.1,0.2", "sam.k=2,5"])
    assert [v for v, _ in points] == ["sam.alpha=0.1,sam.k=2", "sam.alpha=0.1,sam.k=5",
                                      "sam.alpha=0.2,sam.k=2", "sam.alpha=0.2,sam.k=5"]
    assert points[1][1] == ["sam.alpha=0.1", "sam.k=5"]


@pytest.mark.parametrize("bad", ["sam.alpha", "alpha=0.1", "sam.alpha="])
def test_bad_sweep_is_refused_with_the_fix(bad, tmp_path, capsys):
    assert driver.main(["run", TABLE, "--scale", "smoke", "--runs", str(tmp_path), "--dry-run",
                        "--cells", "resnet18/looksam5", "--sweep", bad]) == 2
    assert "sam.alpha=0.05,0.1,0.2" in capsys.readouterr().err


def test_unknown_cell_lists_the_valid_ones(tmp_path, capsys):
    assert driver.main(["run", "looksam_table1", "--runs", str(tmp_path), "--cells", "foo/bar"]) == 2
    err = capsys.readouterr().err
    assert "no cell 'foo/bar'" in err and "resnet18/looksam5" in err and "Traceback" not in err


def test_variant_config_carries_the_point(tmp_path):
    table = registry.load(TABLE)
    cell = table.cell("resnet18/looksam5")
    (tmp_path / "reproduce_cell").mkdir()
    (tmp_path / "reproduce_cell" / "c.yaml").write_text(
        driver.cell_config(table, cell, 1, "sam.alpha=0.2", ("sam.alpha=0.2",)))
    cfg = composed(["+reproduce_cell=c"], searchpath=tmp_path)
    assert cfg["sam"]["alpha"] == 0.2 and cfg["sam"]["k"] == 5 and cfg["variant"] == "sam.alpha=0.2"
    # The cell's other values are untouched.
    direct = composed([*cell.overrides, "sam.alpha=0.2", "trainer.seed=1", f"table={TABLE}",
                       "cell=resnet18/looksam5", "variant='sam.alpha=0.2'"])
    assert cfg == direct


def test_only_pending_points_launch_in_their_own_folders(tmp_path, capsys):
    table = registry.load(TABLE)
    cell = table.cell("resnet18/looksam5")
    done = driver.run_dir(tmp_path, table, "smoke", cell, 0, "sam.alpha=0.1")
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert driver.main(["run", TABLE, "--scale", "smoke", "--runs", str(tmp_path), "--dry-run",
                        "--cells", "resnet18/looksam5", "--sweep", "sam.alpha=0.1,0.2,0.4"]) == 0
    out = capsys.readouterr().out
    assert "1 cells x 3 sweep point(s) x 1 seed(s); 1 completed, 2 to run" in out
    assert "hydra.sweep.subdir=${cell}/${variant}/seed${trainer.seed}" in out
    assert len(re.search(r"\+reproduce_cell=(\S+)", out).group(1).split(",")) == 2


@pytest.mark.slow
def test_sweep_runs_each_point_in_its_folder(tmp_path):
    """Two smoke jobs of LookSAM-5 at alpha 0.1 and 0.4, then `results sweep` over them."""
    cmd = [sys.executable, "-m", "reproduce", "run", TABLE, "--scale", "smoke", "--runs",
           str(tmp_path), "--cells", "resnet18/looksam5", "--sweep", "sam.alpha=0.1,0.4",
           "--wandb", "disabled"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    base = tmp_path / TABLE / "smoke" / "resnet18" / "looksam5"
    for alpha in (0.1, 0.4):
        s = json.loads((base / f"sam.alpha={alpha}" / "seed0" / "summary.json").read_text())
        assert s["status"] == "completed" and s["config"]["sam"]["alpha"] == alpha
    text = sweep.markdown(base)
    assert "swept: sam.alpha" in text and "| 0.1 |" in text and "| 0.4 |" in text


# ---- results sweep ----------------------------------------------------------------------------------


def job(tmp_path, name, status="completed", val=None, test=None, **cfg):
    d = tmp_path / name
    d.mkdir(parents=True)
    config = {"sam": {"alpha": cfg.get("alpha", 0.7), "rho": cfg.get("rho", 0.05)},
              "trainer": {"seed": cfg.get("seed", 0), "workdir": str(d)}}
    (d / "summary.json").write_text(json.dumps({"status": status, "config": config,
                                                "final_validation_accuracy": val,
                                                "final_test_accuracy": test}))


def test_one_key_table_with_seeds_and_failures(tmp_path):
    job(tmp_path, "a/s0", val=0.70, test=0.69, alpha=0.1, seed=0)
    job(tmp_path, "a/s1", val=0.72, test=0.71, alpha=0.1, seed=1)
    job(tmp_path, "b/s0", status="diverged", alpha=0.7, seed=0)
    text = sweep.markdown(tmp_path)
    assert "swept: sam.alpha" in text
    # mean 71.00, sample std of (70, 72) = 1.41
    assert "| 0.1 | validation 71.00 ± 1.41 · test 70.00 ± 1.41 (n=2) |" in text
    assert "| 0.7 | validation — · test — (n=0) ✗ seed0 diverged |" in text


def test_a_copy_counts_unless_its_run_is_in_the_sweep_too(tmp_path):
    # The evidence store's copies (evidence_from): a base point kept in another table's folder is
    # the only record of that point here and counts; a point recorded again as the cell's run does not.
    def copy(name, **kw):
        job(tmp_path, name, **kw)
        path = tmp_path / name / "summary.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), evidence_from="elsewhere/seed0")))

    copy("seed0", val=0.66, test=0.67, rho=0.05, seed=0)  # its run is in another table's folder
    copy("seed1", val=0.60, test=0.61, rho=0.05, seed=1)  # its run is in another table's folder
    job(tmp_path, "sam.rho=0.083/seed0", val=0.70, test=0.71, rho=0.083, seed=0)
    # a run recorded after sam.selection existed, at its default: the same setting as the older runs
    path = tmp_path / "sam.rho=0.083/seed0/summary.json"
    s = json.loads(path.read_text())
    s["config"]["sam"]["selection"] = "ceil"
    path.write_text(json.dumps(s))
    copy("again/seed0", val=0.70, test=0.71, rho=0.083, seed=0)  # the same run as the line above
    text = sweep.markdown(tmp_path)
    assert "3 job(s); swept: sam.rho." in text
    # (66 + 60) / 2 = 63, (67 + 61) / 2 = 64, sample std of each pair sqrt(18) = 4.24
    assert "| 0.05 | validation 63.00 ± 4.24 · test 64.00 ± 4.24 (n=2) |" in text
    assert "| 0.083 | validation 70.00 · test 71.00 (n=1) |" in text


def test_train_loss_and_lookSAM_drift_follow_the_accuracies(tmp_path):
    job(tmp_path, "a/s0", val=0.70, test=0.69, alpha=0.1, seed=0)
    path = tmp_path / "a/s0/summary.json"
    s = json.loads(path.read_text())
    # history means over finite values: cos (0.9 + 0.7) / 2 = 0.8, change 0.25 (nan skipped)
    s.update(final_train_loss=0.0123, history=[
        {"epoch": 1, "g_v_cos_prev": 0.9, "g_v_change": float("nan")},
        {"epoch": 2, "g_v_cos_prev": 0.7, "g_v_change": 0.25}])
    path.write_text(json.dumps(s))
    job(tmp_path, "b/s0", val=0.60, test=0.61, alpha=0.7, seed=0)
    text = sweep.markdown(tmp_path)
    assert ("| 0.1 | validation 70.00 · test 69.00 · train loss 0.0123 · cos(g_v, previous g_v) 0.800"
            " · ‖Δg_v‖ / ‖g_v‖ 0.250 (n=1) |") in text
    assert "| 0.7 | validation 60.00 · test 61.00 (n=1) |" in text


def test_two_keys_grid_and_heatmap(tmp_path):
    for i, (alpha, rho) in enumerate([(0.1, 0.05), (0.1, 0.1), (0.2, 0.05), (0.2, 0.1)]):
        job(tmp_path, f"j{i}", val=0.5 + i / 10, test=0.5, alpha=alpha, rho=rho)
    text = sweep.markdown(tmp_path)
    assert "| sam.alpha \\ sam.rho | 0.05 | 0.1 |" in text
    assert results_cli.main(["sweep", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("override, expected", [
    ("data.train_split=train[:10%]", "data.train_split='train[:10%]'"),
    ("data.train_split='train[:10%]'", "data.train_split='train[:10%]'"),
    ("data.data_dir=../shared/data/tfds", "data.data_dir=../shared/data/tfds"),
    ("sam.alpha=0.2", "sam.alpha=0.2"),
    ("model=cnn", "model=cnn"),
])
def test_forwarded_overrides_are_quoted_for_the_multirun(override, expected):
    assert driver.quoted(override) == expected


def test_a_run_that_did_not_complete_exits_non_zero_after_rendering(tmp_path):
    """A cell that fails (k=0 is refused before compiling) is rendered as failed, and the command
    exits 1 naming it; the quoted split reaches the job intact."""
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "reproduce", "run", TABLE, "--scale", "smoke", "--runs",
           str(tmp_path / "runs"), "--out", str(out_dir), "--cells", "resnet18/looksam5",
           "--wandb", "disabled", "-o", "sam.k=0", "-o", "data.train_split=train[:50%]"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "1 run(s) did not complete: resnet18/looksam5/seed0" in out.stderr
    summary = json.loads(registry.run_dir(tmp_path / "runs", TABLE, "smoke", "resnet18", "looksam5", 0)
                         .joinpath("summary.json").read_text())
    assert summary["status"] == "failed" and "k=0" in summary["message"]
    assert summary["config"]["data"]["train_split"] == "train[:50%]"
    assert "failed" in (out_dir / f"{TABLE}_smoke.md").read_text()
