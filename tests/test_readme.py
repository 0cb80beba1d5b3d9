"""The README's training-loop example runs as printed and shows what the README says it shows."""

from __future__ import annotations

import ast
import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_loop_runs_and_prints_the_described_metrics():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "train_step = jax.jit" in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    lines = [line.split(" ", 1) for line in out.getvalue().strip().splitlines()]
    # nan: a metric not measured at that step (g_v's drift before the second SAM step)
    metrics = {int(t): ast.literal_eval(m.replace("nan", "None")) for t, m in lines}
    assert sorted(metrics) == list(range(10))
    assert [t for t, m in metrics.items() if m["sam_step"] == 1.0] == [0, 5]
    # Step 1 reuses g_v measured on the same batch at the same weights (lr is 0 at step 0), so
    # g_v is orthogonal to g and cos(g, g + 0.7 |g|/|g_v| g_v) = 1 / sqrt(1 + 0.7^2).
    assert abs(metrics[1]["cos_g_gs"] - 1 / (1 + 0.7**2) ** 0.5) < 1e-3


def test_the_table_of_tables_is_the_plans():
    """The README's table of tables is `python -m reproduce plan all --markdown` over the committed
    plan cache: one line per table, its plan at paper size and the paper's speeds against it."""
    from reproduce import plan, registry

    text = README.read_text()
    begin, end = "<!-- reproduce plan all --markdown -->", "<!-- end of reproduce plan all --markdown -->"
    assert begin in text and end in text
    block = text[text.index(begin) + len(begin):text.index(end)].strip().splitlines()
    expected = plan.markdown([registry.load(n) for n in registry.names()], plan.load_cache(),
                             plan.hardware(plan.DEFAULT_HARDWARE), plan.DEFAULT_DEVICES, plan.DEFAULT_MFU)
    assert block == expected, "README.md's table of tables is stale: paste `reproduce plan all --markdown`'s"
    assert len(block) == 2 + len(registry.names())
