"""looksam.run_identity: which config differences make another run, against hand-written configs."""

import pytest
from omegaconf import OmegaConf

from looksam import run_identity


def test_changes_ignores_resumable_keys_and_reports_a_changed_lr():
    recorded = {"optimizer": {"lr": 0.1, "momentum": 0.9}, "logger": {"project": "a"},
                "trainer": {"workdir": "/a", "max_steps": 4, "seed": 0}, "table": "t1",
                "scale": {"name": "cpu"}}
    current = {"optimizer": {"lr": 0.2, "momentum": 0.9}, "logger": {"project": "b"},
               "trainer": {"workdir": "/b", "max_steps": 9, "seed": 0}, "table": "t2",
               "scale": {"name": "smoke"}}
    assert run_identity.changes(recorded, current) == ["optimizer.lr: 0.1 -> 0.2"]
    assert run_identity.changes(recorded, recorded) == []


def test_changes_match_resumable_keys_whole_not_by_prefix():
    # "table" is resumable, "tables" is not; "trainer.max_steps" is, "trainer.max_steps_x" is not.
    assert run_identity.changes({"tables": 1, "table": "a"}, {"tables": 2, "table": "b"}) == [
        "tables: 1 -> 2"]
    assert run_identity.changes({"trainer": {"max_steps_x": 1}}, {"trainer": {"max_steps_x": 2}}) == [
        "trainer.max_steps_x: 1 -> 2"]


def test_changes_are_sorted_and_count_keys_on_one_side():
    old = {"sam": {"rho": 0.05, "k": 5}, "model": {"kwargs": {"width": 16}}}
    new = {"sam": {"k": 10}, "model": {"kwargs": {"width": 16, "depth": 20}}}
    assert run_identity.changes(old, new) == [
        "model.kwargs.depth: <unset> -> 20", "sam.k: 5 -> 10", "sam.rho: 0.05 -> <unset>"]


def test_flatten_joins_keys_with_dots_and_drops_empty_dicts():
    assert run_identity.flatten({"a": {"b": 1, "c": {"d": "x"}, "e": {}}, "f": None}) == {
        "a.b": 1, "a.c.d": "x", "f": None}


def test_resolved_is_plain_and_interpolation_free():
    cfg = OmegaConf.create({"trainer": {"batch_size": 128}, "data": {"batch": "${trainer.batch_size}"}})
    out = run_identity.resolved(cfg)
    assert out == {"trainer": {"batch_size": 128}, "data": {"batch": 128}}
    assert type(out) is dict and type(out["data"]) is dict


def test_check_same_run_refuses_another_config_only():
    run = {"sam": {"k": 2}, "logger": {"project": "a"}}
    run_identity.check_same_run(None, run, "summary.json", "/w")  # recorded before configs were
    run_identity.check_same_run(run, {"sam": {"k": 2}, "logger": {"project": "b"}}, "summary.json", "/w")
    with pytest.raises(run_identity.ConfigMismatch) as info:
        run_identity.check_same_run(run, {"sam": {"k": 3}, "logger": {"project": "a"}},
                                    "checkpoint step 4", "/w")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "trainer.workdir=/w" in message and "checkpoint step 4" in message
    assert "sam.k: 2 -> 3" in message and "logger" not in message
