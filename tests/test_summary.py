"""looksam/summary.py: the one reader and writer of a run's summary.json."""

from __future__ import annotations

import json
import math

from looksam import summary


def test_write_then_read_gives_the_summary_and_its_typed_fields(tmp_path):
    data = {"status": "completed", "config": {"sam": {"rho": 0.05}}, "history": [{"epoch": 1.0}],
            "steps_per_epoch": 19, "total_seconds": 3600.5, "step": 3800, "best_test_accuracy": 0.9,
            "cost": {"ideal_cost": 2.0}, "nan_metric": math.nan, "flag": True}
    path = summary.write(tmp_path, data)
    assert path == tmp_path / "summary.json" and not list(tmp_path.glob("*.tmp"))
    s = summary.read(tmp_path)
    assert dict(s) == {**data, "nan_metric": s["nan_metric"]} and math.isnan(s["nan_metric"])
    assert (s.status, s.config, s.history, s.steps_per_epoch, s.total_seconds, s.step) == (
        "completed", {"sam": {"rho": 0.05}}, [{"epoch": 1.0}], 19, 3600.5, 3800)
    assert s.value("cost.ideal_cost") == 2.0 and s.number("cost.ideal_cost") == 2.0
    assert s.value("cost.absent") is None and s.value("best_test_accuracy.x") is None
    # not measurements: a NaN, a bool, a string, a missing key
    assert [s.number(k) for k in ("nan_metric", "flag", "status", "absent")] == [None] * 4


def test_older_and_broken_summaries_read_tolerantly(tmp_path):
    assert summary.read(tmp_path) is None  # none: missing or still running (results/collect.py)
    (tmp_path / "summary.json").write_text(json.dumps({"best_test_accuracy": 0.5}))  # no status
    old = summary.read(tmp_path)
    assert (old.status, old.config, old.history, old.evidence_from, old.message) == (
        "failed", {}, [], None, None)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "exploded"}))
    assert summary.read(tmp_path).status == "failed"
    (tmp_path / "summary.json").write_text("{not json")
    broken = summary.read(tmp_path)
    assert broken.status == "failed" and broken.message.startswith("unreadable summary.json")
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert summary.read(tmp_path).message == "summary.json is not an object"
