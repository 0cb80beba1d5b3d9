"""Readings: a table file's second way of running every cell (ESAM's `code`: the authors' code),
loaded, composed, laid out apart from the paper's runs, recorded, rendered and judged under its
own name."""

from __future__ import annotations

import json
import shutil

import pytest

from reproduce import __main__ as driver
from reproduce import compose, registry
from results import __main__ as cli
from results import evidence

CODE = {"sam.m": 64, "sam.selection": "official", "data.cutout": 16, "data.cutout_probability": 0.5,
        "sam.batchnorm": "every_forward"}


def value(config, dotted):
    group, key = dotted.split(".")
    return config[group][key]


def test_the_code_reading_composes_every_official_setting_into_every_cell():
    paper = registry.load("esam_table1")
    code = registry.load("esam_table1", reading="code")
    assert paper.reading is None and code.reading_name == "code"
    assert [c.id for c in code.cells] == [c.id for c in paper.cells]
    cells = [code.cell("resnet18_cifar10/esam"), paper.cell("resnet18_cifar10/esam")]
    ours, theirs = compose.configs(cells, "afternoon")
    for key, want in CODE.items():
        assert value(ours, key) == want, key
    assert (theirs["sam"]["m"], theirs["sam"]["selection"], theirs["data"]["cutout"],
            theirs["sam"]["batchnorm"]) == (None, "ceil", None, "clean")
    # Everything else is the paper's cell: the reading only adds its overrides.
    assert ours["sam"]["beta"] == theirs["sam"]["beta"] == 0.6
    assert ours["optimizer"] == theirs["optimizer"] and ours["model"] == theirs["model"]
    # Each override cites its source.
    assert all(o.cite for o in code.reading.overrides)
    assert any("Esam.py" in o.cite for o in code.reading.overrides)


def test_every_esam_cifar_file_has_the_code_reading():
    for table_id in ("esam_table1", "esam_table2", "esam_table3", "esam_figure1", "esam_figure3",
                     "esam_figure5", "esam_figure6"):
        assert "code" in registry.load(table_id).reading_names(), table_id
    assert registry.load("looksam_table1").reading_names() == ["paper"]


def test_an_unknown_reading_fails_naming_the_file_and_the_readings():
    with pytest.raises(ValueError, match=r"esam_table1 has no reading 'author'; its readings are "
                                         r"\['paper', 'code'\] \(.*esam_table1\.yaml\)"):
        registry.load("esam_table1", reading="author")
    assert registry.load("esam_table1", reading="paper").reading is None


@pytest.mark.parametrize("reading,error", [
    ("{code: {label: x, source: y, overrides: [{set: sam.mm=4, cite: z}]}}", "unknown key 'sam.mm'"),
    ("{code: {label: x, source: y, overrides: [{set: sam.m=4}]}}", "each override is {set: KEY=VALUE"),
    ("{code: {label: x, overrides: [{set: sam.m=4, cite: z}]}}", "needs exactly the keys"),
    ("{code: no_such_file}", "no_such_file.yaml, which does not exist"),
    ("{paper: {label: x, source: y, overrides: [{set: sam.m=4, cite: z}]}}", "'paper' is the reading"),
])
def test_a_bad_reading_fails_on_load_naming_the_file(tmp_path, reading, error):
    text = (registry.TABLES_DIR / "esam_table1.yaml").read_text()
    text = text.replace("readings: {code: esam_code}", f"readings: {reading}")
    (tmp_path / "esam_table1.yaml").write_text(text)
    with pytest.raises(ValueError, match="esam_table1.yaml") as info:
        registry.load("esam_table1", tmp_path)
    assert error in str(info.value)


def test_a_readings_runs_and_renders_live_apart():
    run = registry.run_dir("runs", "esam_table1", "afternoon", "r", "c", 2, reading="code")
    assert run.as_posix() == "runs/esam_table1/afternoon/reading-code/r/c/seed2"
    assert registry.run_dir("runs", "esam_table1", "afternoon", "r", "c", 2, reading="paper") == \
        registry.run_dir("runs", "esam_table1", "afternoon", "r", "c", 2)
    assert registry.render_stem("esam_table1", "afternoon", "code") == "esam_table1_afternoon_code"
    assert registry.render_stem("esam_table1", "afternoon") == "esam_table1_afternoon"


def test_the_driver_runs_a_reading_in_its_own_folder(tmp_path, capsys):
    code = driver.main(["run", "esam_table1", "--scale", "smoke", "--reading", "code", "--runs",
                        str(tmp_path), "--cells", "resnet18_cifar10/esam", "--seeds", "1", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "esam_table1 in the code reading at scale=smoke" in out
    assert f"hydra.sweep.dir={tmp_path}/esam_table1/smoke/reading-code" in out
    generated = (tmp_path / "esam_table1" / "smoke" / "reading-code" / ".cells" / "reproduce_cell"
                 / "resnet18_cifar10__esam__seed0.yaml").read_text()
    assert "reading: code" in generated and "selection: official" in generated
    assert driver.main(["run", "esam_table1", "--reading", "nope", "--dry-run"]) == 2


def _completed_run(table, cell_id, scale, accuracy, seed=0):
    config = compose.config(table.cell(cell_id), scale, seed)
    return {"status": "completed", "final_test_accuracy": accuracy, "best_test_accuracy": accuracy,
            "images_per_sec": 100.0, "seed": seed, "config": config, "table": table.id,
            "cell": cell_id, "reading": table.reading_name}


def test_record_render_and_claims_keep_the_readings_apart(tmp_path, capsys):
    """A code-reading SGD run is recorded under reading-code/, shared with the equal cell of ESAM
    Table 3's code reading but not with any paper-reading cell (Cutout makes it another run);
    render and claims read it only with --reading code, and name the reading."""
    code = registry.load("esam_table1", reading="code")
    runs, store = tmp_path / "runs", tmp_path / "evidence"
    for cell_id, acc in (("resnet18_cifar10/sgd", 0.61), ("resnet18_cifar10/sam", 0.66),
                         ("resnet18_cifar10/esam", 0.64)):
        d = registry.run_dir(runs, code.id, "smoke", *cell_id.split("/"), 0, reading="code")
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_completed_run(code, cell_id, "smoke", acc)))
    lines = evidence.record("esam_table1", runs, "smoke", into=store, reading="code")
    shared = [x for x in lines if "shared with" in x]
    assert any(x.strip().startswith("shared with esam_table3@code resnet18_cifar10/sgd") for x in shared)
    assert not any("@code" not in x for x in shared), shared  # no paper-reading cell takes it
    copy = json.loads((registry.run_dir(store, "esam_table3", "smoke", "resnet18_cifar10", "sgd", 0,
                                        reading="code") / "summary.json").read_text())
    assert copy["evidence_from"] == "esam_table1@code/resnet18_cifar10/sgd/seed0"
    assert copy["reading"] == "code"
    assert not registry.run_dir(store, "esam_table1", "smoke", "resnet18_cifar10", "sgd", 0).exists()

    assert cli.main(["claims", "esam_table1", "--scale", "smoke", "--runs", str(store),
                     "--reading", "code"]) == 0
    out = capsys.readouterr().out
    assert "[reading `code`: the authors' code]" in out.splitlines()[0]
    assert "esam_beats_sam_accuracy: ESAM > SAM | ResNet-18 / CIFAR-10" in out
    assert "64.00 (n=1) | 66.00 (n=1)" in out and "fails, 1 seed" in out
    assert cli.main(["claims", "esam_table1", "--scale", "smoke", "--runs", str(store)]) == 0
    assert "fails, 1 seed" not in capsys.readouterr().out  # the paper's reading has no runs here

    out_dir = tmp_path / "renders"
    assert cli.main(["render", "esam_table1", "--runs", str(store), "--scale", "smoke",
                     "--reading", "code", "--out", str(out_dir)]) == 0
    md = out_dir / "esam_table1_smoke_code.md"
    assert "reading `code`" in md.read_text()
    assert not (out_dir / "esam_table1_smoke.md").exists()
    capsys.readouterr()
    assert cli.main(["report", "--runs", str(store), "--scale", "smoke", "--reading", "code",
                     "--out", str(out_dir)]) == 0
    page = (out_dir / "index_code.html").read_text()
    assert "reading code (the authors&#x27;" in page or "reading code (the authors'" in page
    shutil.rmtree(out_dir)
