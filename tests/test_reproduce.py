"""The table driver: generated cell configs, skipping completed cells, and (slow) whole tables."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from looksam import config
from reproduce import __main__ as driver
from reproduce import registry
from results import claims, collect

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def composed(overrides, searchpath=None):
    config.register()
    extra = [f"hydra.searchpath=[file://{searchpath}]"] if searchpath else []
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, *extra])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("cell_id", ["wrn28_10/sgd", "resnet18/looksam5", "resnet50/sam"])
def test_generated_cell_config_equals_the_cells_overrides(tmp_path, cell_id):
    table = registry.load("looksam_iclr_cifar10")
    cell = table.cell(cell_id)
    (tmp_path / "reproduce_cell").mkdir()
    (tmp_path / "reproduce_cell" / "c.yaml").write_text(driver.cell_config(table, cell, seed=2))
    via_file = composed(["+reproduce_cell=c"], searchpath=tmp_path)
    direct = composed([*cell.overrides, "trainer.seed=2", f"table={table.id}", f"cell={cell_id}"])
    assert via_file == direct
    assert via_file["cell"] == cell_id and via_file["trainer"]["seed"] == 2


def test_only_pending_cells_are_launched(tmp_path, capsys):
    table = registry.load("looksam_iclr_cifar10")
    done = driver.run_dir(tmp_path, table, "smoke", table.cell("resnet18/sgd"), 0)
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"status": "completed"}))
    failed = driver.run_dir(tmp_path, table, "smoke", table.cell("resnet18/sam"), 0)
    failed.mkdir(parents=True)
    (failed / "summary.json").write_text(json.dumps({"status": "failed"}))
    driver.main(["run", table.id, "--scale", "smoke", "--runs", str(tmp_path), "--dry-run",
                 "--cells", "resnet18/sgd", "resnet18/sam", "resnet18/looksam5"])
    out = capsys.readouterr().out
    assert "3 cells x 1 seed(s); 1 completed, 2 to run" in out
    launched = re.search(r"\+reproduce_cell=(\S+)", out).group(1).split(",")
    assert launched == ["resnet18__sam__seed0", "resnet18__looksam5__seed0"]


def test_list_tables_names_every_table(capsys):
    driver.main(["list"])
    out = capsys.readouterr().out
    for name in registry.names():
        assert name in out


def test_config_prints_the_cell_as_hydra_composes_it(capsys):
    table = registry.load("esam_table1")
    cell = table.cell("resnet18_cifar10/esam")
    assert driver.main(["config", table.id, cell.id, "--scale", "cpu", "--seed", "1"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    config.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", overrides=[*cell.overrides, "scale=cpu", "trainer.seed=1",
                                           f"table={table.id}", f"cell={cell.id}"])
    assert printed == OmegaConf.to_container(config.scaled_config(cfg), resolve=True)
    assert (printed["sam"]["method"], printed["trainer"]["epochs"], printed["cell"]) == (
        "esam", 3, cell.id)


def test_config_overrides_and_unknown_cells(capsys):
    cell = registry.load("looksam_table2").cell("vit_b16/looksam5")
    assert driver.main(["config", "looksam_table2", cell.id, "--overrides"]) == 0
    assert capsys.readouterr().out.split() == list(cell.overrides)
    assert driver.main(["config", "looksam_table2", cell.id, "--overrides", "--scale", "cpu"]) == 0
    assert capsys.readouterr().out.split() == [*cell.overrides, "scale=cpu"]
    assert driver.main(["config", "looksam_table2", "vit_b16/nope"]) == 2
    err = capsys.readouterr().err
    assert "no cell 'vit_b16/nope'" in err and "vit_b16/looksam5" in err  # lists the valid ids


def test_compositions_share_one_hydra_context_and_a_disk_cache(tmp_path, monkeypatch):
    import hydra

    from reproduce import compose as compose_lib

    opened = []
    real = hydra.initialize_config_dir
    monkeypatch.setattr(hydra, "initialize_config_dir", lambda *a, **k: opened.append(1) or real(*a, **k))
    monkeypatch.setattr(compose_lib, "_CACHE", {})
    monkeypatch.setattr(compose_lib, "_cache_file", lambda: tmp_path / "composed-test.json")
    table = registry.load("looksam_iclr_cifar10")
    cells = [table.cell(c) for c in ("resnet18/sgd", "resnet18/sam5", "resnet18/looksam5")]
    first = compose_lib.configs(cells, scale="smoke")
    assert len(opened) == 1 and [c["sam"]["method"] for c in first] == ["none", "sam_k", "looksam"]
    assert compose_lib.configs(cells, scale="smoke") == first and len(opened) == 1  # memory
    monkeypatch.setattr(compose_lib, "_CACHE", {})  # a new process: read back from disk
    assert compose_lib.configs(cells, scale="smoke") == first and len(opened) == 1
    compose_lib.configs(cells[:1], scale="cpu")  # another scale composes again
    assert len(opened) == 2


def test_fingerprint_follows_what_composition_reads(tmp_path, monkeypatch):
    from reproduce import compose as compose_lib

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("x: 1\n")
    monkeypatch.setattr(compose_lib, "_INPUTS", (tmp_path / "configs",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    name = compose_lib._cache_file.__wrapped__()
    assert name.parent == tmp_path / "cache" / "looksam"
    (tmp_path / "configs" / "a.yaml").write_text("x: 2\n")
    assert compose_lib._cache_file.__wrapped__() != name


def test_estimates_come_from_the_committed_sgd_runs(tmp_path):
    def put(rel, seconds, steps, method="none", model="resnet18", **extra):
        path = tmp_path / rel / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"status": "completed", "total_seconds": seconds, "step": steps,
                                    "config": {"sam": {"method": method}, "model": {"name": model},
                                               "trainer": {"batch_size": 100},
                                               "scale": {"name": "afternoon"}}, **extra}))

    put("t/afternoon/r/sgd/seed0", 100.0, 10)   # 0.1 s per image
    put("t/afternoon/r/sgd/seed1", 300.0, 10)   # 0.3
    put("t/afternoon/r/sgd/seed2", 200.0, 10)   # 0.2: the median
    put("u/afternoon/r/sgd/seed0", 1.0, 10, evidence_from="t/r/sgd/seed0")  # a copy: not counted
    put("t/afternoon/r/sam/seed0", 1.0, 10, method="sam")
    put("t/afternoon/v/sgd/seed0", 1.0, 10, model="vit_s16")
    ref = driver.sgd_reference(tmp_path)
    assert ref == {"seconds_per_image": pytest.approx(0.2), "runs": 3, "afternoon": 1000}
    assert driver.scale_images("afternoon", ref) == 1000  # measured
    assert driver.scale_images("cpu", ref) == 3 * 50_000  # 3 epochs of the whole split
    assert driver.scale_images("smoke", ref) is None
    assert driver.sgd_reference(tmp_path / "empty") == {}


def run_table(tmp_path, table_id, cells=None):
    command = [sys.executable, "-m", "reproduce", "run", table_id, "--scale", "smoke", "--seeds", "1",
               "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--wandb", "disabled"]
    if cells:
        command += ["--cells", *cells]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, (tmp_path / "out" / f"{table_id}_smoke.md").read_text()


def paper_numbers(table):
    for cell in table.cells:
        for value in cell.paper:
            if isinstance(value, dict):
                yield value["mean"]
            elif value is not None:
                yield value


@pytest.mark.slow
@pytest.mark.parametrize("table_id", ["looksam_table1", "esam_table3"])
def test_whole_table_at_smoke_scale(tmp_path, table_id):
    """Every cell trains on generated data, and the rendered table carries every paper number and
    a value of ours in every cell."""
    table = registry.load(table_id)
    _, markdown = run_table(tmp_path, table_id)
    for number in paper_numbers(table):
        # as printed: "95.41", or with a thousands separator as the paper prints counts ("3,387")
        printed = {f"{number}", f"{number:.1f}", f"{number:.2f}", f"{number:,}"}
        assert any(text in markdown for text in printed), number
    summaries = list((tmp_path / "runs" / table_id / "smoke").rglob("summary.json"))
    assert len(summaries) == len(table.cells)
    assert all(json.loads(p.read_text())["status"] == "completed" for p in summaries)
    grid = markdown.split("\n## ")[0]  # the table itself, before the cost, claims and notes
    for marker in ("missing", "failed", "diverged", "running"):
        assert marker not in grid.lower(), marker
    # Every claim is judged from the runs, except speed: that needs a side-by-side measurement
    # (results record --throughput), which a runs folder does not have until one is recorded.
    checks = claims.check_table(table, collect.collect(table, tmp_path / "runs", "smoke"))
    for check in checks:
        throughput = claims.metric_of(table, check.claim).kind == "throughput"
        assert (check.verdict == claims.MISSING) == throughput, (check.claim.id, check.verdict)


@pytest.mark.slow
def test_an_interrupted_sweep_reruns_only_its_unfinished_cells(tmp_path):
    """SIGKILL the driver once its first cell completed; the rerun leaves that cell alone."""
    import os
    import signal
    import time

    cells = ["resnet18/sgd", "resnet18/sam", "resnet18/looksam5"]
    command = [sys.executable, "-m", "reproduce", "run", "looksam_iclr_cifar10", "--scale", "smoke",
               "--seeds", "1", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
               "--wandb", "disabled", "--no-render", "--cells", *cells]
    table = registry.load("looksam_iclr_cifar10")
    summaries = [driver.run_dir(tmp_path / "runs", table, "smoke", table.cell(c), 0) / "summary.json"
                 for c in cells]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not driver.completed(summaries[0].parent) and time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Hydra job at once
    proc.wait(timeout=60)
    assert driver.completed(summaries[0].parent) and not driver.completed(summaries[2].parent)
    first = summaries[0].read_text()
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert re.search(r"3 cells x 1 seed\(s\); 1 completed, 2 to run", rerun.stdout), rerun.stdout
    assert summaries[0].read_text() == first  # not trained again
    assert all(driver.completed(s.parent) for s in summaries)


@pytest.mark.slow
def test_ctrl_c_during_a_table_saves_the_cell_and_exits_130_without_a_traceback(tmp_path, capsys):
    """Ctrl-C reaches the whole foreground job (here: SIGINT to the process group): the driver
    waits for its cell to checkpoint, names what finished, exits 130; the rerun says it resumes."""
    import os
    import signal

    command = [sys.executable, "-m", "reproduce", "run", "looksam_iclr_cifar10", "--scale", "smoke",
               "--seeds", "1", "--runs", str(tmp_path / "runs"), "--wandb", "disabled", "--no-render",
               "--cells", "resnet18/sgd", "-o", "scale.epochs=40", "-o", "scale.max_steps=400", "-o",
               "trainer.checkpoint_every_steps=1000", "-o", "trainer.log_every_steps=1"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "step 3/" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert "interrupted: 0 of 1 pending run(s) finished" in out, out[-3000:]
    step = json.loads((tmp_path / "runs" / "looksam_iclr_cifar10" / "smoke" / "resnet18" / "sgd" / "seed0"
                       / "summary.json").read_text())["step"]
    assert driver.main(["run", "looksam_iclr_cifar10", "--scale", "smoke", "--seeds", "1", "--runs",
                        str(tmp_path / "runs"), "--cells", "resnet18/sgd", "--dry-run"]) == 0
    assert f"0 completed, 1 to run (1 resuming)\nresuming resnet18/sgd seed 0 from step {step}\n" \
        in capsys.readouterr().out


def test_only_worker_zero_writes_into_the_shared_runs_directory(tmp_path, capsys, monkeypatch):
    assert not driver.secondary_worker({}) and not driver.secondary_worker({"TPU_WORKER_ID": "0"})
    assert driver.secondary_worker({"TPU_WORKER_ID": "3"}) and driver.secondary_worker({"SLURM_PROCID": "1"})
    monkeypatch.setenv("TPU_WORKER_ID", "1")
    driver.main(["run", "looksam_iclr_cifar10", "--scale", "smoke", "--runs", str(tmp_path),
                 "--dry-run", "--cells", "resnet18/sgd"])
    out = capsys.readouterr().out
    shared = tmp_path / "looksam_iclr_cifar10" / "smoke"
    assert f"trainer.workdir={shared}/${{cell}}/seed${{trainer.seed}}" in out  # trains in the shared dir
    assert f"hydra.sweep.dir={shared}" not in out  # Hydra's own files stay local
    assert not (tmp_path / "looksam_iclr_cifar10").exists()  # so do the cell configs
    searchpath = re.search(r"hydra.searchpath=\[file://(\S+?)\]", out).group(1)
    assert (pathlib.Path(searchpath) / "reproduce_cell" / "resnet18__sgd__seed0.yaml").exists()
