"""Claims: the verdict rule on synthetic seeds (every verdict reached, numbers worked by hand),
registry validation of claims, every table's claims against the paper's own numbers, the claims
section of a render and the `claims` / `record` commands."""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import pytest
import yaml

from reproduce import registry
from results import __main__ as cli
from results import claims, collect, evidence, render

# ---- the rule -----------------------------------------------------------------------------------


def test_standard_error_is_sample_std_over_sqrt_n():
    # values 1, 2, 3: sample variance 1 (ddof 1), SE = 1 / sqrt(3)
    assert claims.standard_error([1.0, 2.0, 3.0]) == pytest.approx(1 / math.sqrt(3))
    assert claims.standard_error([5.0]) is None


# lhs mean 0.80, rhs mean 0.70 unless said: each side's values are mean + (-s, 0, s), so the
# sample std is s and SE_side = s / sqrt(3); SE = sqrt(2) s / sqrt(3).
def three(mean, s):
    return [mean - s, mean, mean + s]


@pytest.mark.parametrize("op, lhs, rhs, tol, expected", [
    # d = 0.10; s = 0.03: SE = 0.0245, 2 SE = 0.049 < d -> holds
    (">", three(0.80, 0.03), three(0.70, 0.03), None, "holds"),
    # s = 0.1: 2 SE = 0.163 > d = 0.1 and d + 2SE > 0 -> within noise
    (">", three(0.80, 0.10), three(0.70, 0.10), None, "within noise"),
    # reversed: d = -0.10, d + 2 SE = -0.051 < 0 -> fails
    (">", three(0.70, 0.03), three(0.80, 0.03), None, "fails"),
    # >= with d = 0 exactly and no spread: d - 2 SE = 0 >= 0 holds; > does not
    (">=", [0.5, 0.5], [0.5, 0.5], None, "holds"),
    (">", [0.5, 0.5], [0.5, 0.5], None, "within noise"),
    # ~: d = 0.002, s = 0.001 -> 2 SE = 0.00163; |d| + 2SE = 0.00363 <= 0.005 holds
    ("~", three(0.702, 0.001), three(0.700, 0.001), 0.005, "holds"),
    # ~: d = 0.02, 2 SE = 0.00163; |d| - 2SE = 0.0184 > 0.005 fails
    ("~", three(0.72, 0.001), three(0.70, 0.001), 0.005, "fails"),
    # ~: d = 0.005, s = 0.003 -> 2 SE = 0.0049: neither bound -> within noise
    ("~", three(0.705, 0.003), three(0.700, 0.003), 0.005, "within noise"),
    # one seed: the point values decide, and say so
    (">", [0.71], three(0.70, 0.05), None, "holds, 1 seed"),
    (">", [0.69], [0.70], None, "fails, 1 seed"),
    ("~", [0.704], [0.700], 0.005, "holds, 1 seed"),
    ("~", [0.71], [0.70], 0.005, "fails, 1 seed"),
    (">", [], [0.70], None, "missing"),
    (">", [0.7, 0.8], [], None, "missing"),
])
def test_every_verdict(op, lhs, rhs, tol, expected):
    assert claims.verdict(op, lhs, rhs, tolerance=tol)[0] == expected


def test_d_and_se_by_hand_with_a_factor():
    # lhs 2, 4 (mean 3, s^2 = 2, SE^2 = 1); rhs 1, 1, 4 (mean 2, s^2 = 3, SE^2 = 1); factor 1.2:
    # d = 3 - 2.4 = 0.6, SE = sqrt(1 + 1.44) = 1.562
    result, d, se = claims.verdict(">", [2.0, 4.0], [1.0, 1.0, 4.0], factor=1.2)
    assert d == pytest.approx(0.6) and se == pytest.approx(math.sqrt(2.44))
    assert result == "within noise"


def test_by_design_failure_is_marked():
    claim = registry.Claim(id="x", quote="q", section="s", axis="column", lhs="a", op=">", rhs="b",
                           metric="m", by_design="our SWP saves no compute")
    assert claims.shown(claim, "fails") == "fails (by design)"
    assert claims.shown(claim, "fails, 1 seed") == "fails (by design), 1 seed"
    assert claims.shown(claim, "holds") == "holds"


# ---- registry validation -------------------------------------------------------------------------

BASE = "looksam_iclr_cifar10"


def with_claims(tmp_path, claim_list, **extra):
    raw = yaml.safe_load((registry.TABLES_DIR / f"{BASE}.yaml").read_text())
    raw["claims"] = claim_list
    raw.update(extra)
    (tmp_path / f"{BASE}.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


GOOD = dict(id="c", quote="q", section="Section 1", axis="column", lhs="sam", op=">", rhs="sgd",
            metric="best_test_accuracy")


@pytest.mark.parametrize("change, message", [
    (dict(lhs="samm"), r"claim 'c': unknown cell lhs='samm': no column with that id"),
    (dict(axis="row", lhs="sam"), r"unknown cell lhs='sam': no row"),
    (dict(metric="images_per_sec"), r"unknown metric 'images_per_sec'"),
    (dict(op="<"), r"unknown operator '<'"),
    (dict(op="~"), r"a tolerance goes with '~'"),
    (dict(tolerance=0.01), r"a tolerance goes with '~'"),
    (dict(op="~", tolerance=0.01), r"tolerance_reason"),
    (dict(within=["vit"]), r"unknown cell\(s\) in within: \['vit'\]"),
    (dict(colour="red"), r"unknown key\(s\) \['colour'\]"),
])
def test_bad_claim_names_file_and_claim(tmp_path, change, message):
    d = with_claims(tmp_path, [dict(GOOD, **change)])
    with pytest.raises(ValueError, match=message) as info:
        registry.load(BASE, d)
    assert f"{BASE}.yaml" in str(info.value)


def test_claims_are_required_or_explained(tmp_path):
    raw = yaml.safe_load((registry.TABLES_DIR / f"{BASE}.yaml").read_text())
    raw.pop("claims", None)
    (tmp_path / f"{BASE}.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="no `claims:`"):
        registry.load(BASE, tmp_path)
    with pytest.raises(ValueError, match="claims_reason"):
        registry.load(BASE, with_claims(tmp_path, []))
    assert registry.load(BASE, with_claims(tmp_path, [], claims_reason="curves")).claims == ()


def test_every_table_has_claims_or_a_reason():
    for table in registry.all_tables().values():
        assert table.claims or table.claims_reason, table.id


def test_paper_numbers_satisfy_each_claim_or_the_claim_says_not():
    """Each claim, fed the paper's printed values, holds, unless its paper_note says it does not."""
    for table in registry.all_tables().values():
        for claim in table.claims:
            pairs = claim.pairs(table)
            assert pairs, f"{table.id} {claim.id} covers no pair of cells"
            broken = []
            for at, lhs, rhs in pairs:
                values = claims.paper_point(lhs, table, claim), claims.paper_point(rhs, table, claim)
                if None in values:
                    continue
                result = claims.verdict(claim.op, [values[0]], [values[1]], claim.factor,
                                        claim.tolerance)[0]
                if not result.startswith("holds"):
                    broken.append(at)
            assert not broken or claim.paper_note, (table.id, claim.id, broken)


# ---- checks, renders and commands on fake evidence -------------------------------------------------

SCALE = "afternoon"


def summary(acc, seed, method="none"):
    return {"status": "completed", "final_test_accuracy": acc, "best_test_accuracy": acc + 0.01,
            "seed": seed, "config": {"sam": {"method": method}, "data": {"data_dir": "/home/me/tfds"},
                                     "trainer": {"workdir": "/scratch/me/run", "seed": seed}}}


@pytest.fixture()
def fake_runs(tmp_path):
    runs = tmp_path / "runs"
    for column, accs, method in (("sgd", (0.70, 0.71, 0.70), "none"),
                                 ("sam", (0.73, 0.74, 0.73), "sam")):
        for seed, acc in enumerate(accs):
            d = registry.run_dir(runs, BASE, SCALE, "resnet18", column, seed)
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(summary(acc, seed, method)))
    failed = registry.run_dir(runs, BASE, SCALE, "resnet18", "looksam5", 0)
    failed.mkdir(parents=True)
    (failed / "summary.json").write_text(json.dumps({"status": "diverged", "message": "nan"}))
    return runs


def test_check_table_on_fake_runs(fake_runs):
    table = registry.load(BASE)
    results = collect.collect(table, fake_runs, SCALE)
    checks = {(c.claim.id, c.at): c for c in claims.check_table(table, results)}
    sam_sgd = [c for (cid, at), c in checks.items() if at == "resnet18" and c.lhs_cell.endswith("/sam")
               and c.rhs_cell.endswith("/sgd")]
    assert sam_sgd, "the table claims SAM improves on SGD-M"
    c = sam_sgd[0]
    # d from final_test_accuracy: 0.73333 - 0.70333 = 0.03. Each side: sample variance
    # (2 x 0.00333^2 + 0.00667^2) / 2 = 3.333e-5, SE^2 = 1.111e-5; both: SE = sqrt(2.222e-5).
    assert c.d == pytest.approx(0.03)
    assert c.se == pytest.approx(math.sqrt(2 * 1e-4 / 9), rel=1e-6)
    assert c.verdict == "holds"
    # A side without a completed seed (LookSAM-5 diverged) is missing, never a pass.
    assert all(c.verdict == "missing" for c in checks.values() if "looksam5" in (c.lhs_cell + c.rhs_cell)
               and c.at == "resnet18")


def test_render_has_claims_section(fake_runs, tmp_path):
    table = registry.load(BASE)
    results = collect.collect(table, fake_runs, SCALE)
    text = render.markdown(table, results, SCALE, "test")
    assert "## Claims" in text and "| holds |" in text
    assert "Claims" in render.html_page(table, results, SCALE, "test")
    assert "Verdict" in render.latex(table, results, SCALE)


def test_claims_command_strict(fake_runs, capsys):
    assert cli.main(["claims", BASE, "--scale", SCALE, "--runs", str(fake_runs)]) == 0
    out = capsys.readouterr().out
    assert "holds" in out
    # Swap SAM and SGD-M: "SAM improves on SGD-M" now fails, and --strict says so with exit 1.
    root = fake_runs / BASE / SCALE / "resnet18"
    shutil.move(root / "sam", root / "tmp")
    shutil.move(root / "sgd", root / "sam")
    shutil.move(root / "tmp", root / "sgd")
    assert cli.main(["claims", BASE, "--scale", SCALE, "--runs", str(fake_runs)]) == 0
    assert cli.main(["claims", BASE, "--scale", SCALE, "--runs", str(fake_runs), "--strict"]) == 1


def test_record_is_portable_and_never_replaces(fake_runs, tmp_path):
    store = tmp_path / "evidence"
    lines = evidence.record(BASE, fake_runs, SCALE, into=store, share=False)
    assert sum(": recorded in" in x for x in lines) == 6
    assert any("looksam5/seed0: diverged, not recorded" in x for x in lines)
    recorded = json.loads((registry.run_dir(store, BASE, SCALE, "resnet18", "sam", 0)
                           / "summary.json").read_text())
    assert recorded["config"]["data"]["data_dir"] is None
    assert recorded["config"]["trainer"]["workdir"] is None
    assert "/home/me" not in json.dumps(recorded) and "/scratch" not in json.dumps(recorded)
    # Rerecording is a no-op; a different summary for a recorded seed is kept unless asked.
    again = [x for x in evidence.record(BASE, fake_runs, SCALE, into=store, share=False)
             if "not recorded" not in x]
    assert len(again) == 6 and all(": unchanged in" in x for x in again)
    d = registry.run_dir(fake_runs, BASE, SCALE, "resnet18", "sam", 0)
    (d / "summary.json").write_text(json.dumps(summary(0.10, 0, "sam")))
    assert any("kept" in x for x in evidence.record(BASE, fake_runs, SCALE, into=store, share=False))
    again = json.loads((registry.run_dir(store, BASE, SCALE, "resnet18", "sam", 0)
                        / "summary.json").read_text())
    assert again["final_test_accuracy"] == 0.73


def test_render_never_replaces_a_render_of_more_seeds(fake_runs, tmp_path):
    table = registry.load(BASE)
    out = tmp_path / "out"
    cli.write(table, collect.collect(table, fake_runs, SCALE), SCALE, "test", out)
    first = (out / f"{BASE}_{SCALE}.md").read_text()
    assert render.rendered_seeds(out / f"{BASE}_{SCALE}.md") == 6
    with pytest.raises(render.FewerSeeds):
        cli.write(table, collect.collect(table, tmp_path / "empty", SCALE), SCALE, "test", out)
    assert (out / f"{BASE}_{SCALE}.md").read_text() == first
    assert cli.main(["render", BASE, "--runs", str(tmp_path / "empty"), "--scale", SCALE,
                     "--out", str(out)]) == 1
    assert (out / f"{BASE}_{SCALE}.md").read_text() == first


def test_scales_come_from_configs():
    assert {"paper", "cpu", "smoke", "afternoon"} <= set(registry.scale_names())
    assert registry.run_dir("r", "t", "s", "row", "col", 2) == pathlib.Path("r/t/s/row/col/seed2")


@pytest.mark.slow  # composes every registry cell (half a minute cold); make test-slow (and CI) run it
def test_record_shares_a_run_with_the_equal_cells_of_other_tables(tmp_path):
    # The ICLR CIFAR-10 table and ESAM Table 1 both take their ResNet-18 SGD-M and SAM cells from
    # ESAM Table 4's settings, so an SGD-M run of one is the other's too; SAM's is not SGD-M's.
    from reproduce import compose

    table = registry.load("looksam_iclr_cifar10")
    runs, store = tmp_path / "runs", tmp_path / "evidence"
    for column in ("sgd", "sam5"):
        config = compose.config(table.cell(f"resnet18/{column}"), "smoke", 0)
        run = dict(summary(0.7, 0, "none"), config=config)
        d = registry.run_dir(runs, table.id, "smoke", "resnet18", column, 0)
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(run))
    lines = evidence.record(table.id, runs, "smoke", into=store)
    shared = [x for x in lines if "shared with" in x]
    assert any("esam_table1 resnet18_cifar10/sgd" in x for x in shared)
    assert not any("resnet18_cifar10/sam:" in x or "resnet18_cifar10/esam" in x for x in shared)
    copy = json.loads((registry.run_dir(store, "esam_table1", "smoke", "resnet18_cifar10", "sgd", 0)
                       / "summary.json").read_text())
    assert copy["evidence_from"] == "looksam_iclr_cifar10/resnet18/sgd/seed0"
    assert copy["table"] == "esam_table1" and copy["cell"] == "resnet18_cifar10/sgd"
    assert not registry.run_dir(store, "esam_table1", "smoke", "resnet18_cifar10", "sam", 0).exists()


@pytest.mark.slow  # composes a registry cell (seconds warm, half a minute cold)
def test_record_keeps_sweep_points_and_takes_the_one_the_table_now_composes(tmp_path):
    # A sweep over LookSAM-5's alpha: the point at the table's own alpha is the cell's run; the
    # other point is recorded only as a point. The sweep of the store counts each run once.
    from reproduce import compose
    from results import sweep

    table = registry.load("looksam_iclr_cifar10")
    cell = table.cell("resnet18/looksam5")
    runs, store = tmp_path / "runs", tmp_path / "evidence"
    config = compose.config(cell, "smoke", 0)
    table_alpha = config["sam"]["alpha"]
    other = json.loads(json.dumps(config))
    other["sam"]["alpha"] = table_alpha / 7
    variants = {f"sam.alpha={table_alpha}": (config, 0.71), f"sam.alpha={table_alpha / 7}": (other, 0.69)}
    for variant, (point_config, acc) in variants.items():
        d = registry.run_dir(runs, table.id, "smoke", "resnet18", "looksam5", 0, variant)
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(dict(summary(acc, 0, "looksam"), config=point_config)))
    lines = evidence.record(table.id, runs, "smoke", into=store, share=False)
    for variant in variants:
        assert (registry.run_dir(store, table.id, "smoke", "resnet18", "looksam5", 0, variant)
                / "summary.json").exists(), lines
    cell_run = json.loads((registry.run_dir(store, table.id, "smoke", "resnet18", "looksam5", 0)
                           / "summary.json").read_text())
    assert cell_run["final_test_accuracy"] == 0.71
    point = f"looksam_iclr_cifar10/resnet18/looksam5/sam.alpha={table_alpha}"
    assert cell_run["evidence_from"] == f"{point}/seed0"
    assert cell_run["config"]["data"]["data_dir"] is None
    jobs = sweep.load(registry.run_dir(store, table.id, "smoke", "resnet18", "looksam5", 0).parent)
    assert sorted(j["final_test_accuracy"] for j in jobs) == [0.69, 0.71]
