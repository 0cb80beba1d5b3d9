"""Throughput claims: `record --throughput` times a table's cells side by side (looksam/throughput.py)
into throughput.json, and a claim on a throughput metric is judged from that file alone (median
over rounds, 2 SE over the rounds' values), never from the runs' own images_per_sec."""

from __future__ import annotations

import json
import math

import pytest

from reproduce import registry
from results import __main__ as cli
from results import claims, collect

TABLE, SCALE = "esam_table1", "smoke"
ROW = "resnet18_cifar10"


def test_record_throughput_writes_side_by_side_rounds(tmp_path, capsys):
    cells = [f"{ROW}/sgd", f"{ROW}/sam"]
    assert cli.main(["record", "--throughput", TABLE, "--scale", SCALE, "--runs", str(tmp_path),
                     "--rounds", "2", "--steps", "2", "--cells", *cells]) == 0
    path = registry.scale_dir(tmp_path, TABLE, SCALE) / "throughput.json"
    data = json.loads(path.read_text())
    assert (data["table"], data["scale"], data["reading"]) == (TABLE, SCALE, None)
    assert (data["rounds"], data["steps"]) == (2, 2)
    machine = data["machine"]
    assert machine["device_count"] >= 1 and machine["device_kind"] and machine["cpu_model"]
    assert "xla_flags" in machine and {"jax", "jaxlib", "flax"} <= set(machine["versions"])
    assert list(data["cells"]) == cells
    for cell_id, method in zip(cells, ("none", "sam"), strict=True):
        cell = data["cells"][cell_id]
        assert cell["method"] == method and cell["model"] == "resnet18"
        assert (cell["batch_size"], cell["image_size"], cell["steps_per_round"]) == (8, 32, 2)
        assert len(cell["images_per_sec"]) == 2 and all(v > 0 for v in cell["images_per_sec"])
        assert cell["median"] == pytest.approx(sum(cell["images_per_sec"]) / 2)
    out = capsys.readouterr().out
    sam_cell = data["cells"][f"{ROW}/sam"]
    assert sam_cell["ideal_cost"] == 2.0 and data["cells"][f"{ROW}/sgd"]["ideal_cost"] == 1.0
    ratio = data["cells"][f"{ROW}/sgd"]["median"] / sam_cell["median"]
    assert f"{ROW}/sam: {sam_cell['median']:,.1f} images/s" in out
    assert f"step time {ratio:.2f}x sgd (ideal 2.00x)" in out
    # collect reads the rounds back for the claims; cells not measured have none.
    results = collect.collect(registry.load(TABLE), tmp_path, SCALE)
    assert results[f"{ROW}/sam"].throughput == tuple(data["cells"][f"{ROW}/sam"]["images_per_sec"])
    assert results[f"{ROW}/esam"].throughput == ()


def write_throughput(runs, rounds: dict) -> None:
    d = registry.scale_dir(runs, TABLE, SCALE)
    d.mkdir(parents=True, exist_ok=True)
    cells = {cell_id: {"images_per_sec": v} for cell_id, v in rounds.items()}
    (d / "throughput.json").write_text(json.dumps({"table": TABLE, "scale": SCALE, "cells": cells}))


def check(runs, claim_id: str):
    table = registry.load(TABLE)
    found = [c for c in claims.check_table(table, collect.collect(table, runs, SCALE))
             if c.claim.id == claim_id and c.at == ROW]
    assert len(found) == 1
    return found[0]


SAM = [94.0, 95.0, 99.0]  # median 95 (mean 96); sample variance (4 + 1 + 9) / 2 = 7


@pytest.mark.parametrize("esam, verdict", [
    # variance (100 + 0 + 100) / 2 = 100 about 110; SE = sqrt(100/3 + 7/3) = 5.972, 2 SE = 11.94
    ([100.0, 110.0, 120.0], "holds"),  # d = 110 - 95 = 15 > 11.94
    ([95.0, 105.0, 115.0], "within noise"),  # d = 10: |d| < 2 SE
    ([70.0, 80.0, 90.0], "fails"),  # d = -15, d + 2 SE = -3.06 < 0
])
def test_throughput_claim_from_rounds(tmp_path, esam, verdict):
    write_throughput(tmp_path, {f"{ROW}/esam": esam, f"{ROW}/sam": SAM})
    c = check(tmp_path, "esam_faster_than_sam")
    assert c.d == pytest.approx(sorted(esam)[1] - 95.0)  # medians, not means (96 for SAM)
    assert c.se == pytest.approx(math.sqrt(100 / 3 + 7 / 3))
    assert c.verdict == verdict
    assert c.ours == (tuple(esam), tuple(SAM))


def test_throughput_claim_by_design(tmp_path):
    # ESAM at 1.403x SAM: d = 110 - 1.403 * 95 = -23.285; SE^2 = 100/3 + 1.403^2 * 7/3;
    # d + 2 SE = -23.285 + 2 * 6.34 < 0: fails, which the claim's by_design explains.
    write_throughput(tmp_path, {f"{ROW}/esam": [100.0, 110.0, 120.0], f"{ROW}/sam": SAM})
    c = check(tmp_path, "esam_1_403x_sam_speed_resnet18_cifar10")
    assert c.d == pytest.approx(110 - 1.403 * 95)
    assert c.se == pytest.approx(math.sqrt(100 / 3 + 1.403**2 * 7 / 3))
    assert c.verdict == claims.BY_DESIGN


def test_throughput_claim_missing_without_measurement(tmp_path):
    # Completed runs with images_per_sec (ESAM's clearly faster) are not a measurement side by side.
    for column, ips, acc in (("esam", 300.0, 0.9), ("sam", 100.0, 0.8)):
        for seed in range(3):
            d = registry.run_dir(tmp_path, TABLE, SCALE, ROW, column, seed)
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps({
                "status": "completed", "images_per_sec": ips + seed, "final_test_accuracy": acc + seed / 100,
                "best_test_accuracy": acc + seed / 100}))
    assert check(tmp_path, "esam_faster_than_sam").verdict == claims.MISSING
    assert check(tmp_path, "esam_1_403x_sam_speed_resnet18_cifar10").verdict == claims.MISSING
    assert check(tmp_path, "esam_beats_sam_accuracy").verdict == claims.HOLDS  # accuracy: the runs
    # The claims line still renders, and the measurement, once there, decides.
    assert cli.main(["claims", TABLE, "--scale", SCALE, "--runs", str(tmp_path)]) == 0
    write_throughput(tmp_path, {f"{ROW}/esam": [90.0, 91.0, 92.0], f"{ROW}/sam": [100.0, 101.0, 102.0]})
    assert check(tmp_path, "esam_faster_than_sam").verdict == claims.FAILS


def test_record_throughput_refuses_before_measuring(tmp_path, capsys):
    """An override without a variant would pass for the scale's own measurement, and an existing
    file is a recorded result: both stop before anything is built, naming the fix."""
    base = ["record", "--throughput", TABLE, "--scale", SCALE, "--runs", str(tmp_path)]
    assert cli.main([*base, "-o", "scale.model_kwargs.resnet18.width=64"]) == 2
    assert "--variant NAME" in capsys.readouterr().err
    assert cli.main([*base, "-o", "x=1", "--variant", "Full Width"]) == 2
    assert "lower-case" in capsys.readouterr().err
    write_throughput(tmp_path, {f"{ROW}/sam": [1.0]})
    before = (registry.scale_dir(tmp_path, TABLE, SCALE) / "throughput.json").read_text()
    assert cli.main(base) == 2
    assert "--replace" in capsys.readouterr().err
    assert (registry.scale_dir(tmp_path, TABLE, SCALE) / "throughput.json").read_text() == before


def test_record_throughput_variant_applies_its_overrides(tmp_path):
    """-o reaches every cell's config (the width shows in the model's parameter count: the step
    builds a wider model, so it is slower), and the file is the variant's, not throughput.json."""
    cell = f"{ROW}/sgd"
    assert cli.main(["record", "--throughput", TABLE, "--scale", SCALE, "--runs", str(tmp_path),
                     "--rounds", "1", "--steps", "1", "--cells", cell,
                     "-o", "scale.model_kwargs.resnet18.width=4", "--variant", "narrow"]) == 0
    scale_dir = registry.scale_dir(tmp_path, TABLE, SCALE)
    assert not (scale_dir / "throughput.json").exists()
    data = json.loads((scale_dir / "throughput-narrow.json").read_text())
    assert data["overrides"] == ["scale.model_kwargs.resnet18.width=4"]
    assert data["cells"][cell]["model_kwargs"]["width"] == 4
    assert collect.throughput_variants(scale_dir) == ["narrow"]
    results = collect.collect(registry.load(TABLE), tmp_path, SCALE)
    assert results[cell].throughput_variants == {"narrow": tuple(data["cells"][cell]["images_per_sec"])}
    assert results[cell].throughput == ()
