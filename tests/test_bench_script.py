"""scripts/bench_methods.py runs end to end and reports XLA's FLOP ratios (timings are not tested)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bench(tmp_path, *args, env=None):
    """Runs the script on a tiny CNN for one round; returns (stdout, {method: row})."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_methods.py"), "--widths", "4", "--batch", "8",
         "--image-size", "8", "--rounds", "1", *args, "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, {r["method"]: r for r in json.loads(out.read_text())["rows"]}


def test_bench_script_prints_its_table(tmp_path):
    stdout, rows = bench(tmp_path, "--steps", "5", "--methods", "none", "sam", "looksam-5", "esam")
    assert "| method | ms/step | images/s | ratio to none |" in stdout
    assert set(rows) == {"none", "sam", "looksam-5", "esam"}
    assert rows["none"]["ratio"] == 1.0
    assert rows["sam"]["flop_ratio"] == pytest.approx(2.0, rel=0.05)
    assert rows["looksam-5"]["flop_ratio"] == pytest.approx(1.2, rel=0.05)
    assert rows["looksam-5"]["ideal"] == pytest.approx(1.2)
    assert rows["esam"]["ideal"] == pytest.approx(1 + 1 / 3 + 0.5)


def test_bench_script_times_microbatched_steps_beside_whole_ones(tmp_path):
    stdout, rows = bench(tmp_path, "--steps", "2", "--methods", "none", "sam", "--microbatch", "2",
                         env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert "| sam 4x2 |" in stdout
    assert set(rows) == {"none", "sam", "none 4x2", "sam 4x2"}
    # Four chunks of 2 do the arithmetic of one batch of 8, give or take the accumulation adds.
    assert rows["sam 4x2"]["flop_ratio"] == pytest.approx(rows["sam"]["flop_ratio"], rel=0.05)
    assert rows["none 4x2"]["flop_ratio"] == pytest.approx(1.0, rel=0.05)
    assert rows["sam 4x2"]["overhead_vs_whole_batch"] > 0
