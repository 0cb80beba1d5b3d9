"""scripts/esam_attribution.py: one row per ESAM-related cell, and its last column judges "cell >
SAM" by the two-standard-error rule, checked here against the arithmetic done by hand."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import pathlib
import statistics

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUMMARY = (ROOT / "evidence" / "esam_table1" / "afternoon" / "resnet18_cifar10" / "sam" / "seed0"
           / "summary.json")


def load_script():
    path = ROOT / "scripts" / "esam_attribution.py"
    spec = importlib.util.spec_from_file_location("esam_attribution", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cell(runs, table, column, finals):
    template = json.loads(SUMMARY.read_text())
    for seed, final in enumerate(finals):
        summary = copy.deepcopy(template)
        summary.update(table=table, cell=f"resnet18_cifar10/{column}", seed=seed, final_test_accuracy=final)
        seed_dir = runs / table / "afternoon" / "resnet18_cifar10" / column / f"seed{seed}"
        seed_dir.mkdir(parents=True)
        (seed_dir / "summary.json").write_text(json.dumps(summary))


def test_the_last_column_is_d_and_two_standard_errors(tmp_path, capsys):
    sam, esam, sds = [0.66, 0.67, 0.65], [0.62, 0.64, 0.60], [0.61]
    write_cell(tmp_path, "esam_table1", "sam", sam)
    write_cell(tmp_path, "esam_table1", "esam", esam)
    write_cell(tmp_path, "esam_table3", "sds", sds)
    assert load_script().main(["--runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| paper")]
    rows = {cells[1]: cells for cells in rows}
    assert set(rows) == {"resnet18_cifar10/sam", "resnet18_cifar10/esam", "resnet18_cifar10/sds"}
    # ESAM: d = 62 - 66 = -4 points; SE^2 = (2^2 + 1^2) / 3 (sample std 2 and 1 points, 3 seeds each).
    two_se = 2 * math.sqrt((statistics.stdev([62, 64, 60]) ** 2 + statistics.stdev([66, 67, 65]) ** 2) / 3)
    assert two_se == pytest.approx(2 * math.sqrt(5 / 3))
    assert rows["resnet18_cifar10/esam"][-1] == f"-4.00 ± {two_se:.2f} (fails)"  # -4 + 2.58 < 0
    assert rows["resnet18_cifar10/esam"][3] == "62.00 ± 2.00 (3)"
    assert rows["resnet18_cifar10/sds"][-1] == "-5.00 (fails, 1 seed)"
    assert rows["resnet18_cifar10/sam"][-1] == "—"
