"""scripts/bench_trainer.py runs the trainer and its compiled step side by side and writes its rows
(timings are not tested: a 4-step run on a tiny CNN measures nothing but the plumbing)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about half a minute of subprocess training; make test-slow (and CI) run it
def test_bench_trainer_writes_its_rows(tmp_path):
    out = tmp_path / "trainer.json"
    # scale=smoke's CNN (widths 4, 8), batch 8, mock data; the compilation cache lets the trainer's
    # runs load the benchmark's compiled steps, which keeps the test under a minute.
    env = dict(os.environ, WANDB_MODE="disabled", LOOKSAM_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_trainer.py"), "--model", "cnn", "--scale", "smoke",
         "--data", "mock", "--steps", "4", "--rounds", "1", "--methods", "none", "looksam-5",
         "--logger", "disabled", "--breakdown", "--compilation-cache", str(tmp_path / "jax_cache"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| method | trainer images/s | benchmark images/s | trainer / benchmark |" in proc.stdout
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"none", "looksam-5"}
    assert rows["none"]["trainer_ratio"] == 1.0 and rows["none"]["bench_ratio"] == 1.0
    assert rows["none"]["ideal"] == 1.0
    # LookSAM-5: one SAM step (2 passes) and four reuse steps (1 pass) per period of 5.
    assert rows["looksam-5"]["ideal"] == pytest.approx(1 + 1 / 5)
    for row in rows.values():
        assert row["trainer_images_per_sec"] > 0 and row["bench_images_per_sec"] > 0
        assert row["trainer_over_bench"] == pytest.approx(
            row["trainer_images_per_sec"] / row["bench_images_per_sec"])
        assert len(row["trainer_images_per_sec_per_round"]) == 1
        # Item 4's ratio test, one-sided (a step cheaper than its ideal is no overhead) and two-sided.
        assert row["ratio_at_most_5pct_above"] == (row["trainer_ratio"] <= 1.05 * row["ideal"])
        assert row["ratio_within_5pct"] == (abs(row["trainer_ratio"] / row["ideal"] - 1) <= 0.05)
        # The method reached the trainer through Hydra, with bench_methods.py's hyper-parameters.
        assert "scale=smoke" in row["overrides"] and "data.mock=true" in row["overrides"]
    assert {"sam=looksam", "sam.k=5", "sam.alpha=0.7"} <= set(rows["looksam-5"]["overrides"])
    assert result["batch"] == 8
    # --breakdown: the Breakdown hook saw every step of each run, one window per host sync (every
    # step at scale=smoke), and LookSAM-5's both compiled branches.
    for label, runs in (("none", 1), ("looksam-5", 2)):
        breakdown = result["breakdown"][label]
        assert [w["steps"] for w in breakdown["windows"]] == [1, 1, 1, 1]
        assert len(breakdown["first_calls_s"]) == runs
        assert breakdown["timed_s"] == pytest.approx(sum(w["wall_s"] for w in breakdown["windows"]))
    assert result["hardware"]["device_count"] == result["devices"]
