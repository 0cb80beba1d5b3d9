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
