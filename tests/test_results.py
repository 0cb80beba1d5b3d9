"""The results renderer on fake runs: cell values and statuses, ratios, cost table, files, figures."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import pathlib
import re

import numpy as np
import pytest

from reproduce import registry
from results import __main__ as cli
from results import collect, figures, render, tables, writers

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = "looksam_iclr_cifar10"
SQRT2 = math.sqrt(2)  # the sample std of two values 1 apart from their mean
SCALE = "cpu"


def write_summary(runs, table_id, cell, seed, **summary):
    row, column = cell.split("/")
    d = pathlib.Path(runs) / table_id / SCALE / row / column / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def completed(acc, ips=None, ideal=None, sam=None):
    return dict(status="completed", best_test_accuracy=acc, final_test_accuracy=acc, final_train_loss=0.5,
                images_per_sec=ips, seconds_per_epoch=None if ips is None else 50_000 / ips,
                cost={"ideal_cost": ideal}, config={"sam": sam} if sam else {})


SGD_ACC = [0.80, 0.82, 0.83]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for seed, acc in enumerate(SGD_ACC):
        write_summary(runs, TABLE, "resnet18/sgd", seed, **completed(acc, ips=1000.0, ideal=1.0))
    for seed, acc in enumerate([0.84, 0.86]):
        write_summary(runs, TABLE, "resnet18/looksam5", seed, **completed(acc, ips=830.0, ideal=1.2))
    # No cost counter: the ideal comes from the run's config via looksam.sam.
    write_summary(runs, TABLE, "resnet18/sam", 0,
                  **completed(0.85, ips=500.0, sam={"method": "sam", "rho": 0.05, "k": 5}))
    write_summary(runs, TABLE, "resnet18/sam5", 0, status="failed", message="RuntimeError: out of memory")
    write_summary(runs, TABLE, "resnet18/sam10", 0, status="diverged", best_test_accuracy=None,
                  message="non-finite training loss")
    running = pathlib.Path(runs) / TABLE / SCALE / "resnet18" / "sam20" / "seed0" / "checkpoints"
    running.mkdir(parents=True)
    return runs


@pytest.fixture(scope="module")
def rendered(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    table = registry.load(TABLE)
    results = collect.collect(table, runs, SCALE)
    paths = cli.write(table, results, SCALE, str(runs), out)
    return table, results, paths, paths["md"].read_text()


def test_collect_statuses_and_statistics(rendered):
    _, results, _, _ = rendered
    sgd = results["resnet18/sgd"]
    assert sgd.status == "completed" and sgd.seeds == {"seed0": "completed", "seed1": "completed",
                                                        "seed2": "completed"}
    assert sgd.values["best_test_accuracy"] == SGD_ACC
    assert math.isclose(sgd.mean["best_test_accuracy"], np.mean(SGD_ACC))
    assert math.isclose(sgd.std["best_test_accuracy"], np.std(SGD_ACC, ddof=1))  # sample std
    assert results["resnet18/sam"].std["best_test_accuracy"] is None  # one seed
    assert results["resnet18/sam5"].status == "failed"
    assert results["resnet18/sam10"].status == "diverged"
    assert results["resnet18/sam20"].status == "running"
    assert results["wrn28_10/sgd"].status == "missing" and results["wrn28_10/sgd"].seeds == {}


def test_aggregate_status_is_the_worst_seed():
    assert collect.aggregate_status(["completed", "completed"]) == "completed"
    assert collect.aggregate_status(["completed", "running", "diverged"]) == "diverged"
    assert collect.aggregate_status(["missing", "failed", "diverged"]) == "failed"
    assert collect.aggregate_status([]) == "missing"


def test_markdown_has_every_paper_number_ours_and_the_difference(rendered):
    table, _, _, md = rendered
    for cell in table.cells:
        assert f"paper {cell.paper[0]:.1f}" in md, cell.id
    mean, std = 100 * np.mean(SGD_ACC), 100 * np.std(SGD_ACC, ddof=1)
    assert f"{mean:.1f} ± {std:.1f} · paper 95.6 · Δ {mean - 95.6:+.1f}" in md
    assert "85.0 · paper 96.4 · Δ -11.4" in md  # one seed: no ±


def test_status_markers(rendered):
    _, _, _, md = rendered
    row = next(line for line in md.splitlines() if line.startswith("| ResNet-18 |"))
    for marker in ("✗ failed", "✗ diverged", "… running"):
        assert marker in row
    assert "— missing" in md
    assert "RuntimeError: out of memory" in md  # the failed run's message, under "Runs not completed"


def test_cost_table_ideal_and_measured(rendered):
    _, _, _, md = rendered

    def cost_row(label):
        line = next(x for x in md.splitlines() if x.startswith(f"| {label} |") and x.count("|") == 6)
        return [c.strip() for c in line.strip("|").split("|")]

    # Method, paper, side by side (no throughput.json here), runs, ideal
    assert cost_row("LookSAM-5") == ["LookSAM-5", "—", "—", f"{1000 / 830:.2f}", "1.20"]
    assert cost_row("SAM") == ["SAM", "—", "—", "2.00", "2.00"]
    assert cost_row("SAM-10")[4] == "1.10"  # never run: from its composed config (sam_k, k=10)


def test_never_run_cells_take_cost_and_parameters_from_the_composed_config():
    """Not from a reading of the overrides: `++sam.k=10` sets k as Hydra composes it, and a key no
    override names has the value of the group file (sam/looksam.yaml: k 5) or the schema."""
    forced = registry.Cell("r", "c", ("sam=sam_k", "++sam.k=10"), (None,))
    table = dataclasses.replace(registry.load(TABLE), cells=(forced,), base_column=None,
                                columns=({"id": "c", "label": "C"},))
    assert tables.ideal_cost(table, "c", {}) == pytest.approx(1.1)
    assert figures.parameter_value(forced, "sam.k") == 10
    plain = registry.Cell("r", "c", ("sam=looksam",), (None,))
    assert figures.parameter_value(plain, "sam.k") == 5
    assert figures.parameter_value(plain, "sam.alpha") == 0.7
    assert figures.parameter_value(plain, "sam.nonexistent") is None


# The path results take (README's Layout): each module imports only modules before it.
PIPELINE = ("collect", "claims", "evidence", "tables", "figures", "writers", "render", "sweep",
            "landscape", "wandb_log", "report", "__main__")


def test_results_imports_run_one_way_along_the_pipeline():
    """collect -> claims -> tables -> figures and writers -> render -> report -> the command line:
    no module imports one after it (so no circle), even inside a function, and every module is
    placed on the path."""
    import ast

    def imported(module):
        tree = ast.parse((ROOT / "results" / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "results":
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("results."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("results.")}
        return names

    modules = {p.stem for p in (ROOT / "results").glob("*.py")} - {"__init__"}
    assert modules == set(PIPELINE), "place a new module on PIPELINE"
    for i, module in enumerate(PIPELINE):
        later = imported(module) & set(PIPELINE[i:])
        assert not later, f"results/{module}.py imports {sorted(later)}, at or after it on the path"
    assert "figures" in imported("render") or "figures" in imported("report")  # the test sees imports
    assert not hasattr(render, "write") and callable(cli.write)


def test_tex_and_html_written(rendered):
    _, _, paths, _ = rendered
    tex, page = paths["tex"].read_text(), paths["html"].read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex and "LookSAM-5" in tex
    assert r"$\times$ failed" in tex and "96.4" in tex
    assert "<table>" in page and "✗ diverged" in page and "96.4" in page


THROUGHPUT_TABLE = """
id: {id}
kind: {kind}
paper_name: Test paper
source: Table 9
title: Throughput test
base_column: sgd
metrics:
  - {{key: best_test_accuracy, label: Top-1 (%), kind: accuracy, scale: 100, format: .1f}}
  - {{key: images_per_sec, label: images/s, kind: throughput, format: ",.0f"}}
overrides: [sam.rho=0.1]
rows: [{{id: vit, label: ViT-B/16, overrides: [model=vit_b16]}}]
columns:
  - {{id: sgd, label: SGD, overrides: [sam=none]}}
  - {{id: looksam5, label: LookSAM-5, overrides: [sam=looksam, sam.k=5]}}
  - {{id: sam, label: SAM, overrides: [sam=sam]}}
paper:
  vit: [[79.8, 3434], [{{mean: 80.5, std: 0.1}}, 1717], [80.7, null]]
plot: {plot}
notes: [A note on the test table.]
claims: []
claims_reason: a test table
"""


def write_event_file(directory, tag, values):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(directory))
    for step, v in enumerate(values):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)])
        writer.add_event(event_pb2.Event(step=step, wall_time=1.0, summary=summary))
    writer.close()


@pytest.fixture
def throughput_table(tmp_path):
    """make(kind, plot) -> (Table, runs dir): a one-row table (or figure) with two columns run."""
    def make(kind="table", plot="{}", table_id=None):
        table_id = table_id or f"throughput_{kind}"
        (tmp_path / f"{table_id}.yaml").write_text(THROUGHPUT_TABLE.format(id=table_id, kind=kind, plot=plot))
        runs = tmp_path / "runs"
        write_summary(runs, table_id, "vit/sgd", 0, **completed(0.70, ips=1000.0))
        write_summary(runs, table_id, "vit/looksam5", 0, **completed(0.71, ips=590.0))
        seed1 = write_summary(runs, table_id, "vit/looksam5", 1, **completed(0.73, ips=610.0))
        write_event_file(seed1.parent / "seed0", "train_sam_cos_g_gs", [0.9, 0.8, 0.85])
        return registry.load(table_id, directory=tmp_path), runs
    return make


def test_throughput_ratio_to_the_base_column(throughput_table, tmp_path):
    table, runs = throughput_table()
    md = cli.write(table, collect.collect(table, runs, SCALE), SCALE, "test", tmp_path / "out")["md"]
    md = md.read_text()
    assert "images/s: 600 ± 14 (0.60x SGD) · paper 1,717 (0.50x SGD)" in md
    assert "images/s: 1,000 · paper 3,434 |" in md  # the base column: no ratio to itself
    assert "72.0 ± 1.4 · paper 80.5 ± 0.1 · Δ -8.5" in md
    assert "— missing · paper —" in md  # SAM: no run, no printed throughput
    sam_row = next(x for x in md.splitlines() if x.startswith("| SAM |"))
    assert sam_row.replace(" ", "") == "|SAM|—|—|—|2.00|"
    looksam_row = next(x for x in md.splitlines() if x.startswith("| LookSAM-5 |"))
    assert looksam_row.replace(" ", "") == "|LookSAM-5|2.00|—|1.67|1.20|"  # paper 3434/1717
    assert "A note on the test table." in md


def test_cost_table_side_by_side_and_a_variant(throughput_table, tmp_path):
    """The cost columns read throughput.json's medians (and throughput-<variant>.json's), apart from
    the runs' own images/s; LaTeX and HTML carry the same columns."""
    table, runs = throughput_table()
    scale_dir = registry.scale_dir(runs, table.id, SCALE)
    for name, rounds in (("throughput.json", {"vit/sgd": [900.0, 1000.0, 1300.0],  # median 1000
                                              "vit/looksam5": [400.0, 800.0, 500.0]}),  # median 500
                         ("throughput-full-width.json", {"vit/sgd": [40.0, 30.0],  # median 35
                                                         "vit/looksam5": [25.0, 25.0]})):
        cells = {c: {"images_per_sec": v} for c, v in rounds.items()}
        (scale_dir / name).write_text(json.dumps({"cells": cells}))
    paths = cli.write(table, collect.collect(table, runs, SCALE), SCALE, "test", tmp_path / "out")
    md = paths["md"].read_text()
    assert "| Method | paper | side by side | side by side, full-width | runs | ideal (spec) |" in md
    looksam_row = next(x for x in md.splitlines() if x.startswith("| LookSAM-5 |"))
    # paper 3434/1717; side by side 1000/500; full width 35/25; runs 1000/600; ideal 1.2/1
    assert looksam_row.replace(" ", "") == "|LookSAM-5|2.00|2.00|1.40|1.67|1.20|"
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}{lccccc}" in tex and "LookSAM-5 & 2.00 & 2.00 & 1.40 & 1.67 & 1.20" in tex
    assert "<th>side by side, full-width</th>" in paths["html"].read_text()


def test_ratio_to_a_second_column(throughput_table, tmp_path):
    table, runs = throughput_table(plot="{ratio_to: sam}")
    write_summary(runs, table.id, "vit/sam", 0, **completed(0.72, ips=500.0))
    md = cli.write(table, collect.collect(table, runs, SCALE), SCALE, "test", tmp_path / "out")["md"]
    md = md.read_text()
    assert "images/s: 600 ± 14 (0.60x SGD, 1.20x SAM) · paper 1,717 (0.50x SGD)" in md
    assert "images/s: 500 (0.50x SGD) · paper —" in md


def test_scatter_figure_writes_png_and_svg(throughput_table, tmp_path):
    table, runs = throughput_table("figure", "{type: scatter, x: images_per_sec, y: best_test_accuracy, "
                                             "connect: true, xscale: log}")
    paths = cli.write(table, collect.collect(table, runs, SCALE), SCALE, "test", tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths["svg"].read_text()
    assert f"]({paths['png'].name})" in paths["md"].read_text()


def test_a_re_render_of_the_same_data_writes_the_same_bytes(throughput_table, tmp_path):
    # Committed renders must not change when nothing in them did (matplotlib stamps SVGs with the
    # time and random ids unless told otherwise).
    table, runs = throughput_table("figure", "{type: scatter, x: images_per_sec, y: best_test_accuracy}")
    results = collect.collect(table, runs, SCALE)
    first = cli.write(table, results, SCALE, "test", tmp_path / "a")
    second = cli.write(table, results, SCALE, "test", tmp_path / "b")
    for suffix in ("png", "svg"):
        assert first[suffix].read_bytes() == second[suffix].read_bytes(), suffix
    assert "<dc:date>" not in first["svg"].read_text()


PLOTS = ["{type: heatmap, xlabel: gamma, ylabel: beta}", "{type: lines}",
         "{type: bars, metric: images_per_sec}",
         "{type: lines, panels: rows, x: images_per_sec, annotate: parameter, points_from: {table: other, "
         "columns: [sgd]}, series: [{label: LookSAM, parameter: sam.k, columns: [looksam5, sam]}]}",
         "{type: diagnostics}", "{type: diagnostics, panels: rows, x: epoch, series: [{key: cos_g_gs, "
         "label: cos, style: dashed}], paper_curves: {SAM: [[0, 0.5], [2, 0.7]]}}",
         "{type: curves, tags: test_accuracy}", "null"]


def test_every_plot_type_has_a_drawer_and_a_bad_plot_fails_on_load(throughput_table):
    assert set(figures.DRAWERS) == set(registry.PLOT_TYPES)
    for plot, message in [("{type: nonsense}", "plot type 'nonsense'"), ("{type: bars, colour: red}",
                                                                          r"unknown key\(s\) \['colour'\]")]:
        with pytest.raises(ValueError, match=message):
            throughput_table("figure", plot)


@pytest.mark.parametrize("with_runs", [True, False], ids=["runs", "no_runs"])
@pytest.mark.parametrize("plot", PLOTS)
def test_every_figure_type_draws(throughput_table, tmp_path, capsys, plot, with_runs):
    throughput_table(table_id="other")  # points_from's table
    table, runs = throughput_table("figure", plot)
    runs = runs if with_runs else tmp_path / "no_runs"
    paths = cli.write(table, collect.collect(table, runs, SCALE), SCALE, "test", tmp_path / "out",
                      runs_dir=runs, tables_dir=tmp_path)
    assert paths["png"].stat().st_size > 0 and paths["svg"].stat().st_size > 0
    assert "could not draw" not in capsys.readouterr().err  # drawn, not replaced by the error note


def test_diagnostics_reads_tensorboard_scalars(tmp_path):
    write_event_file(tmp_path, "train_sam_cos_g_gs", [0.5, 0.75, 1.0])
    curves = figures.read_scalars(tmp_path, ["train_sam_cos_g_gs", "absent"])
    assert curves == {"train_sam_cos_g_gs": [(0, 0.5), (1, 0.75), (2, 1.0)]}


def test_diagnostics_without_event_files_draw_from_the_summary_history(throughput_table):
    """Committed evidence has summaries only: a series comes from the history of the first seed
    that keeps it (seed 0 of vit/sgd has no history, seed 1 has)."""
    table, runs = throughput_table("figure", "{type: diagnostics, x: epoch, series: [{key: esam_loss_"
                                             "selected_sam, label: B+}, {key: test_accuracy, label: acc}]}")
    history = [{"step": 10, "epoch": 1.0, "esam_loss_selected_sam": 2.5, "test_accuracy": 0.3},
               {"step": 20, "epoch": 2.0, "esam_loss_selected_sam": float("nan"), "test_accuracy": 0.4},
               {"step": 30, "epoch": 3.0, "esam_loss_selected_sam": 1.5, "test_accuracy": 0.5}]
    write_summary(runs, table.id, "vit/sgd", 1, **completed(0.7), steps_per_epoch=10, history=history)
    cells = [c for c in table.cells if c.id in ("vit/sgd", "vit/sam")]
    series, _ = figures._curve_series(table.plot, "diagnostics")
    data = figures._load_curves(table, cells, series, runs, SCALE, by_epoch=True)
    # x is the evaluation's epoch; a NaN ("not measured in that window") is left out.
    assert data["vit/sgd"][0] == {"esam_loss_selected_sam": [(1.0, 2.5), (3.0, 1.5)],
                                  "test_accuracy": [(1.0, 0.3), (2.0, 0.4), (3.0, 0.5)]}
    assert data["vit/sam"][0] == {}  # no run: drawn as "data missing"


def test_a_long_data_missing_note_stays_inside_its_panel():
    """ESAM Figure 5's note names four keys and a folder; it used to spill over the next panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(20.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, 4, i + 1) for i in range(4)]
    keys = ", ".join(f"esam_loss_{a}_{b}" for a in ("selected", "rejected") for b in ("sam", "empirical"))
    for ax in axes[1:]:
        figures._no_data(ax, f"data missing:\nno TensorBoard scalars or summary history\n{keys}\n"
                             "under evidence/esam_figure5/afternoon")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    widths = [ax.get_window_extent(renderer).width for ax in axes]
    assert max(widths) / min(widths) < 1.05  # no panel shrunk to make room for a neighbour's note
    for ax in axes[1:]:
        (note,) = ax.texts
        assert ax.get_window_extent(renderer).contains(*note.get_window_extent(renderer).p0)
        assert ax.get_window_extent(renderer).contains(*note.get_window_extent(renderer).p1)
        assert note.get_text().replace("\n", " ").count("esam_loss_") == 4  # wrapped, nothing dropped


def test_cli_with_no_runs_at_all(tmp_path, capsys):
    assert cli.main(["render", TABLE, "--runs", str(tmp_path / "none"), "--out", str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert md.count("— missing") == len(registry.load(TABLE).cells)
    assert re.search(r"\| SAM \| — \| — \| — \| 2\.00 \|", md)
    assert {p.suffix for p in tmp_path.iterdir()} >= {".md", ".tex", ".html"}


def test_renders_go_under_the_runs_folder_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (or in results/)
    runs = tmp_path / "runs"
    assert cli.main(["render", TABLE, "--runs", str(runs), "--scale", "cpu"]) == 0
    capsys.readouterr()
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == [f"runs/renders/{TABLE}_cpu.{ext}" for ext in ("html", "md", "tex")]


def test_collect_wandb_maps_runs_to_cells():
    class Run:
        def __init__(self, cell, seed, summary, state="finished", scale="cpu", reading=None):
            self.config = {"table": TABLE, "cell": cell, "trainer": {"seed": seed}, "scale": {"name": scale},
                           **({"reading": reading} if reading else {})}
            self.summary, self.state = summary, state

    class Api:
        def runs(self, path, filters):
            # the group reproduce run gives (<table>/<scale>), and the table id of older runs
            assert filters == {"$or": [{"group": f"{TABLE}/{SCALE}"}, {"group": TABLE}]}
            return [Run("resnet18/sgd", 0, {"status": "completed", "best_test_accuracy": 0.8}),
                    Run("resnet18/sgd", 1, {"status": "completed", "best_test_accuracy": 0.9}),
                    Run("resnet18/sgd", 2, {"best_test_accuracy": 0.1}, scale="paper"),
                    Run("resnet18/sgd", 3, {"status": "completed", "best_test_accuracy": 0.2},
                        reading="code"),  # another reading's run in the table-id group
                    Run("resnet18/sam", 0, {}, state="running"),
                    Run("resnet18/sam5", 0, {}, state="crashed")]

    results = collect.collect_wandb(registry.load(TABLE), "e/p", SCALE, api=Api())
    assert results["resnet18/sgd"].values["best_test_accuracy"] == [0.8, 0.9]
    assert results["resnet18/sam"].status == "running"
    assert results["resnet18/sam5"].status == "failed"
    assert results["resnet50/sgd"].status == "missing"


# ---- HTML and the report ----------------------------------------------------------------------------

def test_html_renders_inline_code_not_backticks(rendered):
    _, _, paths, md = rendered
    page = paths["html"].read_text()
    assert "`cpu`" in md and "<code>cpu</code>" in page
    assert "`" not in page  # every code span of the Markdown became <code>
    assert writers.inline_html("a `x<y` & `z`") == "a <code>x&lt;y</code> &amp; <code>z</code>"


def test_report_indexes_every_table_and_embeds_figures(tmp_path, monkeypatch):
    from results import report

    runs = tmp_path / "runs"
    write_summary(runs, TABLE, "resnet18/sgd", 0, **completed(0.8, ips=1000.0))
    for column, acc, ips in (("k1", 0.60, 130.0), ("k5", 0.59, 200.0), ("adamw", 0.55, 240.0)):
        write_summary(runs, "looksam_figure4", f"vit_b16/{column}", 0, **completed(acc, ips=ips))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--runs", "runs", "--scale", SCALE]) == 0
    index = runs / "renders" / "index.html"
    page = index.read_text()
    assert re.findall(r'<tr (?:class="not-run" )?data-table="([^"]+)">', page) == registry.names()
    ran = re.findall(r'<section class="report" data-table="([^"]+)">', page)
    assert ran == ["looksam_figure4", TABLE]
    assert page.count('class="not-run"') == len(registry.names()) - 2
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images == ["looksam_figure4_cpu.png"]
    assert (index.parent / images[0]).read_bytes()[:4] == b"\x89PNG"
    assert "`" not in page and "<code>cpu</code>" in page and "Claims</h3>" in page
    # Up to date: not drawn again; a newer summary makes it stale.
    png = index.parent / images[0]
    before = png.stat().st_mtime_ns
    report.build(runs, SCALE)
    assert png.stat().st_mtime_ns == before
    summary = runs / "looksam_figure4" / SCALE / "vit_b16" / "k1" / "seed0" / "summary.json"
    later = before / 1e9 + 10
    os.utime(summary, (later, later))
    report.build(runs, SCALE)
    assert png.stat().st_mtime_ns != before


# Each verdict text (results/claims.py) and the colour class the report must give it.
VERDICT_CLASS = {"holds": "verdict-holds", "holds, 1 seed": "verdict-holds", "fails": "verdict-fails",
                 "fails, 1 seed": "verdict-fails", "within noise": "verdict-noise",
                 "missing": "verdict-missing", "fails (by design)": "verdict-by-design",
                 "fails (by design), 1 seed": "verdict-by-design"}
# ResNet-18 of the ICLR CIFAR-10 table, final test accuracy per seed, and its six claims' verdicts.
CLAIM_RUNS = {"sgd": (0.80, 0.82), "sam": (0.90, 0.92), "looksam5": (0.81, 0.83), "sam5": (0.70,),
              "looksam10": (0.60,), "sam10": (0.65,)}
# sam > sgd: d = 10 points, 2 SE = 2 x sqrt(2 x 1.414^2 / 2) = 2.8: holds. looksam5 > sgd: d = 1 < 2.8:
# within noise. looksam5 ~ sam (tolerance 0.5): |d| - 2 SE = 9 - 2.8 > 0.5: fails. looksam5 > sam5 on
# one seed: 82 > 70 holds; looksam10 > sam10: 60 < 65 fails; looksam20, sam20 not run: missing.
RESNET18_VERDICTS = [("holds", "verdict-holds"), ("within noise", "verdict-noise"),
                     ("fails", "verdict-fails"), ("holds, 1 seed", "verdict-holds"),
                     ("fails, 1 seed", "verdict-fails"), ("missing", "verdict-missing")]
SWEEP = "sweeps/looksam_iclr_cifar10_cpu_resnet18_looksam5"


def _section(page, table_id):
    match = re.search(rf'<section class="report" data-table="{table_id}">(.*?)</section>', page, re.S)
    return match.group(1) if match else None


def _text(fragment):
    return re.sub(r"<[^>]+>", "", fragment)


@pytest.fixture(scope="module")
def claims_report(tmp_path_factory):
    """A report of the ICLR CIFAR-10 table's ResNet-18 row (CLAIM_RUNS), one ESAM Table 1 pair (a
    by-design failure), ESAM Figure 5 run without its curves, and a sweep rendered beside it."""
    from results import report

    runs = tmp_path_factory.mktemp("claims") / "runs"
    for column, accs in CLAIM_RUNS.items():
        for seed, acc in enumerate(accs):
            write_summary(runs, TABLE, f"resnet18/{column}", seed, **completed(acc))
    # ESAM 550 images/s against SAM's 500: not the 1.403x the paper claims, a failure by design.
    write_summary(runs, "esam_table1", "resnet18_cifar10/sam", 0, **completed(0.95, ips=500.0))
    write_summary(runs, "esam_table1", "resnet18_cifar10/esam", 0, **completed(0.95, ips=550.0))
    # Throughput claims read the side-by-side measurement (one round each), not the runs' images/s.
    (registry.scale_dir(runs, "esam_table1", SCALE) / "throughput.json").write_text(json.dumps(
        {"cells": {"resnet18_cifar10/sam": {"images_per_sec": [500.0]},
                   "resnet18_cifar10/esam": {"images_per_sec": [550.0]}}}))
    write_summary(runs, "esam_figure5", "resnet18_cifar10/esam", 0, **completed(0.9))  # no history
    out = runs / "renders"
    (out / SWEEP).mkdir(parents=True)
    (out / SWEEP / "sweep.md").write_text("# Sweep\n")
    (out / "sweeps" / "looksam_iclr_cifar10_afternoon_resnet18_sam").mkdir()  # another scale's
    (out / "sweeps" / "looksam_iclr_cifar10_afternoon_resnet18_sam" / "sweep.md").write_text("# Sweep\n")
    index = report.build(runs, SCALE)
    return runs, index, index.read_text()


def test_report_colours_each_verdict_by_kind(claims_report):
    _, _, page = claims_report
    cells = re.findall(r'<tr><td>[^<]*</td><td>([^<]*)</td>(?:<td>[^<]*</td>){4}'
                       r'<td class="verdict ([^"]+)">([^<]*)</td></tr>', page)
    assert len(cells) == 3 * 6 + 14  # every claim row of both tables (3 rows x 6 claims; ESAM: 14)
    for _, css, verdict in cells:
        assert css == VERDICT_CLASS[verdict], verdict
    assert [(v, c) for where, c, v in cells if where == "ResNet-18"] == RESNET18_VERDICTS
    assert ("ResNet-18 / CIFAR-10", "verdict-by-design", "fails (by design), 1 seed") in cells
    # The d column's ± is 2 SE (2 x 1.414 = 2.8), the Ours columns' the sample std (ddof 1: 1.4).
    assert "<td>91.0 ± 1.4 (n=2)</td><td>81.0 ± 1.4 (n=2)</td><td>+10.0 ± 2.8 (2 SE)</td>" in page
    # One stylesheet, a distinct colour per verdict kind.
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    colours = dict(re.findall(r"\.verdict-([a-z-]+)\{background:(#[0-9a-f]{6})", style))
    assert set(colours) == {"holds", "fails", "noise", "missing", "by-design"}
    assert len(set(colours.values())) == 5


def test_report_legend_explains_colours_and_plus_minus(claims_report):
    _, _, page = claims_report
    match = re.search(r'<h2 id="legend">Legend</h2>\s*<div class="legend">(.*?)</div>', page, re.S)
    assert match and page.index('id="legend"') < page.index('id="index"')  # before the index
    legend = match.group(1)
    for verdict, css in VERDICT_CLASS.items():
        if verdict != "fails (by design), 1 seed":  # the legend names the kinds and the 1-seed variants
            assert f'<span class="verdict {css}">{html.escape(verdict)}</span>' in legend, verdict
    text = " ".join(_text(legend).split())
    assert ("“Ours lhs” and “Ours rhs” columns: the sample standard deviation over the completed "
            "seeds (ddof 1") in text
    assert "“d (ours)” column, marked (2 SE): 2 standard errors of d" in text
    assert page.count('<div class="legend">') == 1  # once per page, not in every section


def test_report_sections_open_with_their_verdict_counts(claims_report):
    _, _, page = claims_report
    section = _section(page, TABLE)
    summary = re.search(r'<p class="claims-summary">(.*?)</p>', section).group(1)
    assert _text(summary) == "Claims: 2 fails, 2 holds, 13 missing, 1 within noise"
    assert '<span class="verdict verdict-noise">1 within noise</span>' in summary
    assert section.index("claims-summary") < section.index("<table>")  # at the top of the section
    index_row = re.search(rf'<tr data-table="{TABLE}">(.*?)</tr>', page).group(1)
    assert summary.split("Claims: ")[1] in index_row  # the index shows the same counts
    esam = _section(page, "esam_table1")
    assert '<span class="verdict verdict-by-design">1 fails (by design)</span>' in esam


def test_report_lists_a_figure_without_data_as_not_run_with_its_command(claims_report):
    runs, index, page = claims_report
    assert _section(page, "esam_figure5") is None  # no placeholder panels drawn
    assert not (index.parent / "esam_figure5_cpu.png").exists()
    row = re.search(r'<tr class="not-run" data-table="esam_figure5">(.*?)</tr>', page).group(1)
    assert "1 of 4 completed, no data to draw" in row
    assert f"<code>python -m reproduce run esam_figure5 --scale cpu --runs {runs}</code>" in row
    never = re.search(r'<tr class="not-run" data-table="looksam_table7">(.*?)</tr>', page).group(1)
    assert f"<code>python -m reproduce run looksam_table7 --scale cpu --runs {runs}</code>" in never


def test_report_links_the_sweeps_rendered_beside_it(claims_report):
    _, index, page = claims_report
    links = re.findall(r'<a href="(sweeps/[^"]+)">([^<]+)</a>', page)
    assert links == [(f"{SWEEP}/sweep.md", "resnet18/looksam5")]  # not the other scale's sweep
    assert f'<a href="{SWEEP}/sweep.md">' in _section(page, TABLE)
    assert (index.parent / links[0][0]).is_file()


def test_a_figure_with_some_data_still_draws(tmp_path):
    from results import report

    runs = tmp_path / "runs"
    history = [{"step": 10, "epoch": 1.0, "esam_loss_selected_sam": 2.5},
               {"step": 20, "epoch": 2.0, "esam_loss_selected_sam": 1.5}]
    write_summary(runs, "esam_figure5", "resnet18_cifar10/esam", 0, **completed(0.9), steps_per_epoch=10,
                  history=history)
    index = report.build(runs, SCALE)
    page = index.read_text()
    assert '<img src="esam_figure5_cpu.png"' in _section(page, "esam_figure5")
    assert (index.parent / "esam_figure5_cpu.png").read_bytes()[:4] == b"\x89PNG"
    assert 'class="not-run" data-table="esam_figure5"' not in page
    first = index.read_bytes()
    assert report.build(runs, SCALE).read_bytes() == first  # byte-stable


def test_commands_for_the_evidence_store_train_elsewhere_and_record():
    from results import evidence, report

    commands = report.make_commands(registry.load("esam_figure4"), "afternoon", evidence.EVIDENCE_DIR)
    assert commands == [
        "python -m reproduce run esam_figure4 --scale afternoon --runs runs/evidence",
        "python -m results landscape runs/evidence/esam_figure4/afternoon/resnet50/sgd/seed0",
        "python -m results landscape runs/evidence/esam_figure4/afternoon/resnet50/sam/seed0",
        "python -m results landscape runs/evidence/esam_figure4/afternoon/resnet50/esam/seed0",
        "python -m results record esam_figure4 --runs runs/evidence --scale afternoon"]
    assert report.make_commands(registry.load(TABLE), "cpu", "elsewhere") == [
        f"python -m reproduce run {TABLE} --scale cpu --runs elsewhere"]


# ---- normalised scatter -------------------------------------------------------------------------------

def _points(points):
    return {(p["source"], p["column"]): tuple(round(p[k], 6) for k in ("x", "y", "xerr", "yerr"))
            for p in points}


def test_normalised_points_by_hand(throughput_table):
    table, runs = throughput_table("figure", "{type: scatter, normalise: base}")
    results = collect.collect(table, runs, SCALE)
    points = _points(figures.normalised_points(table, results, table.plot, SCALE))
    # Paper: SGD 79.8 @ 3434, LookSAM-5 80.5 ± 0.1 @ 1717, SAM 80.7 @ null (no x: left out).
    # Ours: SGD 70.0 @ 1000; LookSAM-5 71, 73 @ 590, 610: 72.0 ± √2 @ 600 ± 10√2 (sample std); SAM
    # not run.
    assert points == {("paper", "sgd"): (1.0, 0.0, 0.0, 0.0),
                      ("paper", "looksam5"): (0.5, 0.7, 0.0, 0.1),
                      ("ours", "sgd"): (1.0, 0.0, 0.0, 0.0),
                      ("ours", "looksam5"): (0.6, 2.0, round(SQRT2 / 100, 6), round(SQRT2, 6))}
    per_axis = {**table.plot, "normalise": {"x": "looksam5", "y": "base"}}
    points = _points(figures.normalised_points(table, results, per_axis, SCALE))
    assert points[("paper", "sgd")] == (2.0, 0.0, 0.0, 0.0)
    assert points[("ours", "looksam5")] == (1.0, 2.0, round(10 * SQRT2 / 600, 6), round(SQRT2, 6))
    assert points[("ours", "sgd")] == (round(1000 / 600, 6), 0.0, 0.0, 0.0)
    assert figures.normalised_points(table, results, {"normalise": "nonsense"}, SCALE) == []


def test_figure4_normalised_on_one_axis():
    table = registry.load("looksam_figure4")
    assert figures.normalise_refs(table, table.plot) == {"x": "k1", "y": "adamw"}
    results = {}
    for column, accs, ips in (("k1", (0.60, 0.62), (130.0, 130.0)), ("k5", (0.60,), (200.0,)),
                              ("adamw", (0.55,), (260.0,))):
        seeds = {f"seed{i}": ("completed", completed(a, ips=v))
                 for i, (a, v) in enumerate(zip(accs, ips, strict=True))}
        results[f"vit_b16/{column}"] = collect.cell_result(seeds, collect.metric_keys(table))
    points = _points(figures.normalised_points(table, results, table.plot, SCALE))
    # The text's points relative to SAM's 12,800 images/s and as gains over AdamW's 74.7%; AdamW has
    # no printed images/s, k = 2, 15, 20 no printed values: left out.
    assert {k: v for k, v in points.items() if k[0] == "paper"} == {
        ("paper", "k1"): (1.0, 5.1, 0.0, 0.0), ("paper", "k5"): (round(19051 / 12800, 6), 5.1, 0.0, 0.0),
        ("paper", "k10"): (1.6, 4.0, 0.0, 0.0)}
    # Ours: SAM 61.0 ± √2 (sample std) @ 130, LookSAM-5 60.0 @ 200, AdamW 55.0 @ 260.
    assert {k: v for k, v in points.items() if k[0] == "ours"} == {
        ("ours", "k1"): (1.0, 6.0, 0.0, round(SQRT2, 6)),
        ("ours", "k5"): (round(200 / 130, 6), 5.0, 0.0, 0.0),
        ("ours", "adamw"): (2.0, 0.0, 0.0, 0.0)}


@pytest.mark.parametrize("plot", ["{type: scatter, normalise: base, connect: true}",
                                  "{type: scatter, normalise: {x: sam, y: base}}",
                                  "{type: scatter, normalise: nonsense}"])
def test_normalised_scatter_draws(throughput_table, tmp_path, capsys, plot):
    table, runs = throughput_table("figure", plot)
    paths = cli.write(table, collect.collect(table, runs, SCALE), SCALE, "test", tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "could not draw" not in err
    assert ("names no column" in err) == ("nonsense" in plot)


def test_a_figure_that_cannot_be_drawn_is_an_error_not_an_image(throughput_table, tmp_path, capsys,
                                                                 monkeypatch):
    """render exits 1 naming the table and the cause, keeps any earlier render, and still renders
    the other tables; the report is written with the failure named on it, and exits 1."""
    table, runs = throughput_table("figure", "{type: bars, metric: images_per_sec}")

    def broken(*args):
        raise ZeroDivisionError("a drawing bug")

    monkeypatch.setitem(figures.DRAWERS, "bars", broken)
    with pytest.raises(figures.DrawError, match=r"its bars plot: ZeroDivisionError: a drawing bug"):
        figures.build(table, collect.collect(table, runs, SCALE), runs_dir=runs, scale=SCALE)
    out = tmp_path / "renders"
    code = cli.main(["--tables", str(tmp_path), "render", table.id, "--runs", str(runs), "--scale", SCALE,
                     "--out", str(out)])
    assert code == 1 and "could not draw its bars plot" in capsys.readouterr().err
    assert not list(out.glob(f"{table.id}_*"))  # no image of the error, no half render
    code = cli.main(["--tables", str(tmp_path), "report", "--runs", str(runs), "--scale", SCALE,
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "could not draw its bars plot" in err and "without them" in err
    assert "could not draw its bars plot" in (out / "index.html").read_text()
