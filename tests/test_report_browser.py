"""The HTML report (results/report.py) in a real headless browser: built from a tiny fake runs
folder (a few cells of one table and of one figure), opened in Chromium, whose DOM must hold every
table of the page and every registry id in the index, every <img> must have loaded (natural
width above 0), each verdict cell must be painted in its kind's colour, and the link to a sweep
rendered beside the report must lead to its file. Skipped only where no Chromium binary exists
(.ci/run installs Debian's `chromium` when it is missing); $LOOKSAM_CHROMIUM names another binary."""

from __future__ import annotations

import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import pytest

from reproduce import registry
from results import report

SCALE = "cpu"
TABLE, FIGURE = "looksam_iclr_cifar10", "looksam_figure4"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
SWEEP = "sweeps/looksam_iclr_cifar10_cpu_resnet18_looksam5/sweep.md"  # python -m results sweep --out
# The colour class each verdict must have; the 1-seed variants take their kind's.
VERDICT_CLASS = {"holds": "verdict-holds", "holds, 1 seed": "verdict-holds", "fails": "verdict-fails",
                 "fails, 1 seed": "verdict-fails", "within noise": "verdict-noise",
                 "missing": "verdict-missing", "fails (by design)": "verdict-by-design"}

# Runs after the page (and its images) loaded: what the DOM holds, as JSON in a <pre>.
PROBE = """<script>
window.addEventListener("load", () => {
  const sections = [...document.querySelectorAll("section.report")].map(
    s => ({id: s.dataset.table, tables: s.querySelectorAll("table").length}));
  const index = [...document.querySelectorAll("nav.index tr[data-table]")].map(r => r.dataset.table);
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete,
                                                 naturalWidth: i.naturalWidth}));
  const verdicts = [...document.querySelectorAll("td.verdict")].map(
    td => ({text: td.textContent, classes: [...td.classList],
           background: getComputedStyle(td).backgroundColor}));
  const sweeps = [...document.querySelectorAll("section.report a[href^='sweeps/']")].map(
    a => ({section: a.closest("section").dataset.table, href: a.href, text: a.textContent}));
  const out = document.createElement("pre");
  out.id = "browser-probe";
  out.textContent = JSON.stringify({tables: document.querySelectorAll("table").length, sections,
                                    index, images, verdicts, sweeps});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    named = os.environ.get("LOOKSAM_CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def dump_dom(browser: str, page: pathlib.Path, profile: pathlib.Path) -> str:
    """The DOM after load, as Chromium serialises it (--virtual-time-budget lets the images and the
    load handler run before --dump-dom)."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
               "--virtual-time-budget=15000", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and "</html>" in done.stdout, (done.returncode, done.stderr[-2000:])
    return done.stdout


def write_summary(runs, table_id, cell, seed, acc, ips):
    row, column = cell.split("/")
    d = registry.run_dir(runs, table_id, SCALE, row, column, seed)
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps({
        "status": "completed", "best_test_accuracy": acc, "final_test_accuracy": acc,
        "images_per_sec": ips, "seconds_per_epoch": 50_000 / ips}))


def test_report_in_headless_chromium(tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome or $LOOKSAM_CHROMIUM): "
                    "`apt-get install chromium` (.ci/run does) to run the browser check")
    runs = tmp_path / "runs"
    for seed, acc in enumerate((0.80, 0.82)):
        write_summary(runs, TABLE, "resnet18/sgd", seed, acc, 1000.0)
    write_summary(runs, TABLE, "resnet18/sam", 0, 0.84, 500.0)
    # LookSAM-5 > SGD-M: d = 1 point, within 2 SE; LookSAM-5 ~ SAM (one seed): 2 points off, fails.
    for seed, acc in enumerate((0.81, 0.83)):
        write_summary(runs, TABLE, "resnet18/looksam5", seed, acc, 800.0)
    for column, acc, ips in (("k1", 0.60, 130.0), ("k5", 0.595, 200.0), ("adamw", 0.55, 240.0)):
        write_summary(runs, FIGURE, f"vit_b16/{column}", 0, acc, ips)
    sweep = runs / "renders" / SWEEP
    sweep.parent.mkdir(parents=True)
    sweep.write_text("# Sweep\n")
    index = report.build(runs, SCALE)
    assert index == runs / "renders" / "index.html"
    source = index.read_text()
    # The probe goes into a copy beside the report, so relative image paths resolve the same way.
    probed = index.with_name("index_probe.html")
    probed.write_text(source.replace("</body>", PROBE + "</body>"))

    dom = dump_dom(browser, probed, tmp_path / "profile")
    match = re.search(r'<pre id="browser-probe">(.*?)</pre>', dom, flags=re.S)
    assert match, "the page's load handler did not run"
    probe = json.loads(html.unescape(match.group(1)))

    assert probe["index"] == registry.names()  # the index lists every table and figure
    assert {s["id"] for s in probe["sections"]} == {TABLE, FIGURE}
    assert all(s["tables"] >= 2 for s in probe["sections"]), probe["sections"]  # results, claims
    assert probe["tables"] == source.count("<table>") == dom.count("<table>")
    for table_id in (TABLE, FIGURE):
        assert f'data-table="{table_id}"' in dom and f'id="{table_id}"' in dom
    assert [i["src"] for i in probe["images"]] == [f"{FIGURE}_{SCALE}.png"]
    for image in probe["images"]:
        assert image["complete"] and image["naturalWidth"] > 0, image

    # Verdicts: the class of their kind, painted in a colour per kind (the stylesheet applies).
    verdicts = probe["verdicts"]
    assert {v["text"] for v in verdicts} == {"holds, 1 seed", "within noise", "fails, 1 seed", "missing"}
    colours = {}
    for v in verdicts:
        assert VERDICT_CLASS[v["text"]] in v["classes"], v
        assert v["background"] not in ("rgba(0, 0, 0, 0)", "transparent"), v
        colours.setdefault(VERDICT_CLASS[v["text"]], set()).add(v["background"])
    assert all(len(c) == 1 for c in colours.values()), colours  # one colour per kind
    assert len(set().union(*colours.values())) == len(colours) == 4  # and a different one each
    # The sweep rendered beside the report: linked from its table's section, to a file that exists.
    assert [(s["section"], s["text"]) for s in probe["sweeps"]] == [(TABLE, "resnet18/looksam5")]
    target = urllib.parse.urlparse(probe["sweeps"][0]["href"])
    assert target.scheme == "file" and pathlib.Path(urllib.parse.unquote(target.path)) == sweep
