"""The HTML report (results/report.py) in a real headless browser: built from a tiny fake runs
folder (a few cells of one table and of one figure), opened in Chromium, whose DOM must hold every
table of the page and every registry id in the index, and every <img> must have loaded (natural
width above 0). Skipped only where no Chromium binary exists (.ci/run installs Debian's `chromium`
when it is missing); $LOOKSAM_CHROMIUM names another binary."""

from __future__ import annotations

import html
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from reproduce import registry
from results import report

SCALE = "cpu"
TABLE, FIGURE = "looksam_iclr_cifar10", "looksam_figure4"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Runs after the page (and its images) loaded: what the DOM holds, as JSON in a <pre>.
PROBE = """<script>
window.addEventListener("load", () => {
  const sections = [...document.querySelectorAll("section.report")].map(
    s => ({id: s.dataset.table, tables: s.querySelectorAll("table").length}));
  const index = [...document.querySelectorAll("nav.index tr[data-table]")].map(r => r.dataset.table);
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete,
                                                 naturalWidth: i.naturalWidth}));
  const out = document.createElement("pre");
  out.id = "browser-probe";
  out.textContent = JSON.stringify({tables: document.querySelectorAll("table").length, sections,
                                    index, images});
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
    for column, acc, ips in (("k1", 0.60, 130.0), ("k5", 0.595, 200.0), ("adamw", 0.55, 240.0)):
        write_summary(runs, FIGURE, f"vit_b16/{column}", 0, acc, ips)
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
