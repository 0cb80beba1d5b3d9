"""The plan: a cell's step compiled from abstract shapes (looksam/plan.py) counts the FLOPs of the
analytic formulas, the cache makes a second call free, and the hardware arithmetic is the stated
one (reproduce/plan.py)."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess

import flax.linen as nn
import jax
import optax
import pytest
from omegaconf import OmegaConf

from looksam import plan, sam, train
from reproduce import __main__ as cli
from reproduce import compose, registry
from reproduce import plan as plan_cli

BATCH, DEVICES = 1024, 2  # a batch large enough that the per-parameter work is < 1%


class Dense2(nn.Module):  # 32x32x3 flattened -> 256 -> 10
    @nn.compact
    def __call__(self, x, train=True):
        del train
        return nn.Dense(10)(nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1))))


class Conv2(nn.Module):  # 3x3 convolutions, VALID: 32x32x3 -> 30x30x128 -> 28x28x128, mean -> logits
    @nn.compact
    def __call__(self, x, train=True):
        del train
        x = nn.relu(nn.Conv(128, (3, 3), padding="VALID")(x))
        return nn.Conv(128, (3, 3), padding="VALID")(x).mean((1, 2))


def compiled_flops(model, method="none"):
    _, replicated, sharded = train.make_mesh(OmegaConf.create(
        {"num_devices": DEVICES, "batch_size": BATCH, "eval_batch_size": BATCH}))
    est = sam.make(method)
    cfg = OmegaConf.create({"trainer": {"batch_size": BATCH}, "data": {"mixup_alpha": 0.0,
                                                                        "label_smoothing": 0.0}})
    spec = type("Spec", (), {"image_size": 32, "num_classes": 10})
    tx = optax.sgd(0.1, momentum=0.9)
    batch = train.batch_shape(cfg, spec, sharded)
    branches = plan.compile_program(model, tx, est, lambda _: 0.1, 32, batch, replicated, jax.random.key(0))
    return plan.flops_per_step(branches, est.period), branches


def test_dense_model_flops_are_the_matmuls():
    # forward 2 B (3072*256 + 256*10); the weight gradients the same again; the input gradient of
    # the second layer 2 B 256*10 (the first layer's input needs none). Bias, ReLU, softmax, the
    # SGD-momentum update and the step's norms and finite checks (about 22 FLOPs per parameter,
    # 17.8M) add 0.6% at this batch.
    matmuls = 4 * BATCH * (3072 * 256 + 256 * 10) + 2 * BATCH * 256 * 10
    flops, branches = compiled_flops(Dense2())
    assert flops == pytest.approx(matmuls, rel=0.01)
    assert flops > matmuls  # the element-wise work is there too, not less than the matmuls
    assert set(branches) == {"step"}


def test_conv_model_flops_are_the_convolutions():
    # Per image, 2 * output positions * 9 taps * c_in * c_out per convolution (VALID: every tap
    # inside the image): forward and weight gradient for both, the input gradient for the second.
    # The biases, ReLU and mean (about 0.5 M FLOPs per image) add 0.1%.
    conv = lambda size, c_in, c_out: 2 * size * size * 9 * c_in * c_out  # noqa: E731
    analytic = BATCH * (2 * (conv(30, 3, 128) + conv(28, 128, 128)) + conv(28, 128, 128))
    flops, _ = compiled_flops(Conv2())
    assert flops == pytest.approx(analytic, rel=0.005)


def test_sam_costs_two_steps_and_looksam_is_averaged_over_its_period():
    none, _ = compiled_flops(Conv2())
    assert compiled_flops(Conv2(), "sam")[0] / none == pytest.approx(2.0, rel=0.03)
    looksam, branches = compiled_flops(Conv2(), "looksam")  # k = 5: (2 + 4 x 1) / 5 = 1.2 steps
    assert set(branches) == {"sam_step", "reuse_step"}
    assert looksam / none == pytest.approx(1.2, rel=0.03)


def test_hours_follow_flops_peak_and_utilisation():
    entry = {"epochs": 2.0, "train_examples": 1000, "batch_size": 100, "flops_per_step": 3e12,
             "dtype": "bfloat16"}
    profile = {"peak_tflops": {"bfloat16": 100.0, "float32": 50.0}}
    # 20 steps x 3e12 FLOPs / (4 devices x 100e12 x 0.5) = 0.3 s
    assert plan_cli.seconds_per_seed(entry, profile, devices=4, mfu=0.5) == pytest.approx(0.3)
    assert plan_cli.seconds_per_seed({**entry, "dtype": "float32"}, profile, 4, 0.5) == pytest.approx(0.6)


def test_every_hardware_profile_names_its_peaks_memory_and_source():
    for name in plan_cli.hardware_names():
        profile = plan_cli.hardware(name)
        assert set(profile["peak_tflops"]) == {"bfloat16", "float32"} and profile["memory_gib"] > 0
        assert "Source" in (plan_cli.HARDWARE_DIR / f"{name}.yaml").read_text()
    assert {"tpu_v3", "a100", "h100", "h200", "cpu_core"} <= set(plan_cli.hardware_names())
    with pytest.raises(ValueError, match="choose one of"):
        plan_cli.hardware("tpu_v9")


def test_the_cache_compiles_once_and_keys_what_compiles(tmp_path, monkeypatch):
    table = registry.load("esam_table1")
    cells = [c for c in table.cells if c.id == "resnet18_cifar10/sgd"]
    table = type(table)(**{**table.__dict__, "cells": tuple(cells)})
    calls = []
    program = {"batch_size": 128, "branches": {"step": {"flops": 1.0, "memory_per_device": {"total": 1}}}}
    monkeypatch.setattr(plan, "compile_cell", lambda cfg: calls.append(cfg) or program)
    cache = {}
    plan_cli.compile_cells(table, "smoke", 2, cache, progress=lambda s: None)
    plan_cli.compile_cells(table, "smoke", 2, cache, progress=lambda s: None)
    assert len(calls) == 1 and len(cache) == 1
    cfg = compose.config(cells[0], "smoke")
    key = plan_cli.cache_key(cfg, 2)
    other_seed = {**cfg, "trainer": {**cfg["trainer"], "seed": 7}}
    assert plan_cli.cache_key(other_seed, 2) == key  # a seed compiles the same program
    assert plan_cli.cache_key(cfg, 4) != key
    wider = {**cfg, "model": {**cfg["model"], "kwargs": {"width": 64}}}
    assert plan_cli.cache_key(wider, 2) != key

    def sam(**values):
        return {**cfg, "sam": {**cfg["sam"], "method": "looksam", **values}}

    # constants share a program; what shapes it (k = 1 has no reuse step, gamma the subset) does not
    assert plan_cli.cache_key(sam(rho=0.1, k=5), 2) == plan_cli.cache_key(sam(rho=0.5, k=10), 2)
    assert plan_cli.cache_key(sam(k=1), 2) != plan_cli.cache_key(sam(k=5), 2)
    assert plan_cli.cache_key(sam(gamma=0.3), 2) != plan_cli.cache_key(sam(gamma=0.5), 2)
    # a cell that fails to compile is reported, not cached: its cause may lie outside the key
    monkeypatch.setattr(plan, "compile_cell", lambda cfg: calls.append(cfg) or 1 / 0)
    failed = plan_cli.compile_cells(table, "smoke", 4, cache, progress=lambda s: None)
    assert failed["resnet18_cifar10/sgd"]["error"].startswith("ZeroDivisionError") and len(cache) == 1
    path = tmp_path / "cache.json"
    plan_cli.save_cache(cache, path)
    assert plan_cli.load_cache(path) == json.loads(json.dumps(cache))
    # a plan running beside another keeps the other's entries: each save adds to the file's
    plan_cli.save_cache({"other": program}, path)
    assert set(plan_cli.load_cache(path)) == set(cache) | {"other"}


def test_per_device_batch_spreads_each_cell_over_its_own_devices(monkeypatch):
    """--per-device-batch N: a cell of batch B compiles over B / N devices and its hours count them."""
    table = registry.load("esam_table1")
    cells = tuple(c for c in table.cells if c.row == "resnet18_cifar10")[:1]
    table = type(table)(**{**table.__dict__, "cells": cells})
    cfg = compose.config(cells[0], "paper")
    assert cfg["trainer"]["batch_size"] == 128
    assert plan_cli.device_count(cfg, 8, None) == 8 and plan_cli.device_count(cfg, 8, 32) == 4
    with pytest.raises(ValueError, match="does not divide a batch of 128"):
        plan_cli.device_count(cfg, 8, 48)
    seen = []
    program = {"batch_size": 128, "branches": {"step": {"flops": 1.0, "memory_per_device": {"total": 1}}}}
    monkeypatch.setattr(plan, "compile_cell", lambda c: seen.append(c["trainer"]["num_devices"]) or program)
    cache = {}
    compiled = plan_cli.compile_cells(table, "paper", 8, cache, progress=lambda s: None, per_device_batch=32)
    assert seen == [4] and compiled[cells[0].id]["devices"] == 4
    assert list(cache) == [plan_cli.cache_key(cfg, 4)]
    assert plan_cli.planned(table, "paper", 8, cache, per_device_batch=32) == compiled
    assert plan_cli.planned(table, "paper", 8, cache) is None  # 8 devices: another program
    cells = registry.load("esam_table1").cells
    largest = max(compose.config(c, "paper")["trainer"]["batch_size"] for c in cells)
    assert largest >= 128 and plan_cli.most_devices(["esam_table1"], "paper", 8, 64) == largest // 64


def test_plan_command_prints_a_cell_per_line_and_fails_on_bad_input(capsys):
    assert cli.main(["plan", "esam_table1", "--hardware", "tpu_v9"]) == 2
    assert "configs/hardware" in capsys.readouterr().err
    assert cli.main(["plan", "esam_table1", "--mfu", "1.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert cli.main(["plan", "esam_table1", "--per-device-batch", "48"]) == 2
    assert "does not divide a batch of 128" in capsys.readouterr().err


@pytest.mark.slow
def test_sam_over_sgd_is_two_at_paper_size():
    """ResNet-18 / CIFAR-10 at the paper's width and batch (ESAM Table 1), on 8 devices."""
    table = registry.load("esam_table1")
    cells = tuple(c for c in table.cells if c.row == "resnet18_cifar10")
    table = type(table)(**{**table.__dict__, "cells": cells})
    compiled = plan_cli.compile_cells(table, "paper", min(8, jax.device_count()), {}, progress=lambda s: None)
    flops = {cell_id.split("/")[1]: figures["flops_per_image"] for cell_id, figures in compiled.items()}
    assert flops["sam"] / flops["sgd"] == pytest.approx(2.0, abs=0.05)
    assert flops["esam"] / flops["sgd"] == pytest.approx(1 + 1 / 3 + 0.5, abs=0.05)  # the spec's ideal


def test_list_tables_reads_the_plan(capsys, monkeypatch):
    """`make list-tables` gives SCALE=paper's hours from the plan's cache where a table is planned."""
    table = registry.load("esam_table1")
    entry = {"train_examples": 50_000, "batch_size": 128, "dtype": "float32",
             "branches": {"step": {"flops": 1e15, "memory_per_device": {"total": 2**30}}}}
    cache = {plan_cli.cache_key(cfg, 8): entry for cfg in compose.configs(table.cells, "paper")}
    monkeypatch.setattr(plan_cli, "load_cache", lambda path=None: cache)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    # each cell's epochs x 50,000 / 128 steps (ResNet-18 / WRN: 200 epochs, 78,125 steps) x 1e15 FLOPs
    # / (8 x 123e12 x 0.4) FLOP/s, x 3 seeds
    epochs = [cfg["trainer"]["epochs"] for cfg in compose.configs(table.cells, "paper")]
    assert epochs.count(200) >= 12
    hours = sum(math.ceil(e * 50_000 / 128) for e in epochs) * 1e15 / (8 * 123e12 * 0.4) / 3600 * 3
    block = out[out.index("esam_table1 "):out.index("esam_table2 ")]
    assert f"SCALE=paper ~{hours:.1f} h on 8 x TPU v3 chip at 40% of peak (reproduce plan)" in block
    assert "SCALE=paper: not planned yet (python -m reproduce plan esam_table2)" in out


def test_the_papers_speeds_against_the_plan():
    """LookSAM Table 2's s/epoch on its 128 TPU-v3 chips, and Table 5's hours per slice, against
    hand arithmetic from made-up FLOPs per image."""
    table = registry.load("looksam_table2")
    entry = {"train_examples": 1_281_167, "epochs": 300.0, "dtype": "float32"}
    compiled = {c.id: {**entry, "flops_per_image": 2e11 if c.column == "sam" else 1e11} for c in table.cells}
    speeds = {r["cell"]: r for r in plan_cli.paper_speeds(table, compiled, mfu=0.4)}
    adamw, sam = speeds["vit_b16/adamw"], speeds["vit_b16/sam"]
    assert adamw["images_per_sec"] == pytest.approx(1_281_167 / 59.7)
    assert adamw["tflops"] == pytest.approx(1_281_167 / 59.7 * 1e11 / 1e12)
    assert adamw["chips"] == 128
    assert adamw["mfu"] == pytest.approx(1_281_167 / 59.7 * 1e11 / (128 * 123e12))
    # at 40% of 128 x 123 TFLOP/s, 1e11 FLOPs per image: 62,976 images/s, 20.34 s per epoch
    assert adamw["predicted"] == pytest.approx(1_281_167 / (128 * 123e12 * 0.4 / 1e11))
    assert sam["paper_ratio"] == pytest.approx(103.1 / 59.7) and sam["flops_ratio"] == pytest.approx(2.0)
    assert len(speeds) == 24  # every cell prints a time

    table5 = registry.load("looksam_table5")
    compiled = {c.id: {**entry, "flops_per_image": 1e11} for c in table5.cells}
    speeds = {r["cell"]: r for r in plan_cli.paper_speeds(table5, compiled, mfu=0.4)}
    assert "lamb/b32k" not in speeds  # "/" in the paper
    row = speeds["look_layersam/b32k"]  # 0.7 h on 1024 chips
    assert row["chips"] == 1024
    assert row["images_per_sec"] == pytest.approx(300 * 1_281_167 / (0.7 * 3600))
    assert row["predicted"] == pytest.approx(300 * 1_281_167 / (1024 * 123e12 * 0.4 / 1e11) / 3600)
    lines = plan_cli.speeds_text(table5, list(speeds.values()), 0.4)
    assert "Section 4.4" in lines[0] and any("look_layersam/b32k" in line and "0.7 hours" in line
                                             for line in lines)

    esam = registry.load("esam_table1")  # images/s with no hardware: TFLOP/s only
    compiled = {c.id: {**entry, "flops_per_image": 1e9} for c in esam.cells}
    row = {r["cell"]: r for r in plan_cli.paper_speeds(esam, compiled, mfu=0.4)}["resnet18_cifar10/esam"]
    assert row["mfu"] is None and row["predicted"] is None and row["tflops"] == pytest.approx(
        row["images_per_sec"] * 1e9 / 1e12)


def test_paper_hardware_is_checked_on_load(tmp_path):
    text = (registry.TABLES_DIR / "looksam_table5.yaml").read_text()
    for bad, message in [("profile: tpu_v3", "profile: tpu_v9"), ("b32k: 1024}", "b32k: 0}"),
                         ("b4k: 128, ", "")]:
        (tmp_path / "looksam_table5.yaml").write_text(text.replace(bad, message, 1))
        with pytest.raises(ValueError, match="paper_hardware"):
            registry.load("looksam_table5", tmp_path)


def test_each_table_line_names_its_make_target():
    """The README's table of tables gives `make <target>` per table: each runs that table."""
    root = pathlib.Path(__file__).resolve().parents[1]
    targets = [plan_cli.make_target(name) for name in registry.names()]
    out = subprocess.run(["make", "-n", "-C", str(root), *targets], capture_output=True, text=True,
                         check=True)
    ran = [line.split()[-1] for line in out.stdout.splitlines() if "reproduce run" in line]
    assert ran == registry.names()


def test_list_tables_takes_cpu_scale_hours_from_committed_runs(tmp_path, capsys, monkeypatch):
    """A cell with committed runs at a scale counts their mean wall time; the others are estimated
    from the SGD-M reference (the median seconds per image of the committed SGD-M ResNet-18 runs)."""
    for seed, seconds in enumerate((3600.0, 7200.0)):
        run = tmp_path / "esam_table1" / "afternoon" / "resnet18_cifar10" / "sgd" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({
            "status": "completed", "total_seconds": seconds, "step": 1000,
            "config": {"sam": {"method": "none"}, "model": {"name": "resnet18"},
                       "trainer": {"batch_size": 128}, "scale": {"name": "afternoon"}}}))
    monkeypatch.setattr(registry, "EVIDENCE_DIR", tmp_path)
    monkeypatch.setattr(plan_cli, "load_cache", lambda path=None: {})  # no plan: the estimate
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    table = registry.load("esam_table1")
    # the other 17 cells: their passes per step x 128,000 images x 7,200 s / 128,000 images (the median)
    others = sum(cli.cell_cost(c) for c in table.cells if c.id != "resnet18_cifar10/sgd") * 7200.0
    hours = (5400.0 + others) * 3 / 3600
    block = out[out.index("esam_table1 "):out.index("esam_table2 ")]
    assert (f"SCALE=afternoon ~{hours:.1f} h (measured: 1 of 18 cells' committed runs, the rest "
            "estimated)") in block
    assert "SCALE=afternoon ~" in out[out.index("esam_table2 "):] and "(estimated)" in out


def test_list_tables_plans_the_cpu_scale_cells_without_runs(tmp_path, capsys, monkeypatch):
    """Cells with no committed runs take their FLOPs per image from the plan at the cpu scale, at
    the FLOP/s the committed runs reached (the median over runs of FLOPs per image x images / s)."""
    table = registry.load("esam_table1")
    flops = {c.id: 1e12 * (1 + i) for i, c in enumerate(table.cells)}  # per step of 128 images
    cache = {plan_cli.cache_key(compose.config(c, "cpu"), plan_cli.CPU_DEVICES):
             {"batch_size": 128, "train_examples": 50_000, "dtype": "float32",
              "branches": {"step": {"flops": flops[c.id], "memory_per_device": {"total": 1}}}}
             for c in table.cells}
    sgd = "resnet18_cifar10/sgd"
    for seed, seconds in enumerate((3600.0, 7200.0)):
        run = tmp_path / "esam_table1" / "afternoon" / "resnet18_cifar10" / "sgd" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({
            "status": "completed", "total_seconds": seconds, "step": 1000,
            "config": {"sam": {"method": "none"}, "model": {"name": "resnet18"},
                       "trainer": {"batch_size": 128}, "scale": {"name": "afternoon"}}}))
    monkeypatch.setattr(registry, "EVIDENCE_DIR", tmp_path)
    monkeypatch.setattr(plan_cli, "load_cache", lambda path=None: cache)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    # rates: F_sgd / 128 x 128,000 images / 3,600 s and / 7,200 s; the median of two is the larger.
    rate = flops[sgd] / 128 * 128_000 / 3600
    assert f"median {rate / 1e9:.1f} GFLOP/s that 2 committed run(s)" in out
    # afternoon: 128,000 images (the committed run's) per cell, at that rate
    others = sum(flops[c.id] / 128 * 128_000 / rate for c in table.cells if c.id != sgd)
    hours = (5400.0 + others) * 3 / 3600
    block = out[out.index("esam_table1 "):out.index("esam_table2 ")]
    assert f"SCALE=afternoon ~{hours:.1f} h (measured: 1 of 18 cells' committed runs, 17 planned)" in block
    cpu_hours = sum(flops[c.id] / 128 * 3 * 50_000 / rate for c in table.cells) * 3 / 3600
    assert f"SCALE=cpu ~{cpu_hours:.1f} h (planned)" in block
