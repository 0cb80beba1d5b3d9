"""Renders any multirun over its swept keys: `python -m results sweep <dir>`.

Every summary.json under <dir> is one job. A copy the evidence store made of a run (marked
`evidence_from`) counts only when the run itself is not under <dir> too: a cell whose base point
lives in another table (ESAM Table 1's SAM, run as the ICLR table's) keeps it beside its sweep
points, and a point recorded again as the cell's run counts once. The swept keys are the config
keys whose values differ between jobs (the seed, labels and where a job ran aside; a setting a
run predates reads as its default). One key: a table of its values; two: a grid, plus a heatmap
PNG. Each entry: mean ± sample std over trainer.seed of the validation accuracy (what a choice is
made on) and of the final test accuracy, the number of completed seeds, and every job that failed
or diverged, marked as such.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Sequence

from matplotlib.figure import Figure

from looksam import run_identity
from looksam import summary as summary_file
from results import figures, tables, writers
from results.collect import mean_std

IGNORED = ("trainer.seed", "table", "cell", "variant")
METRICS = (("final_validation_accuracy", "validation"), ("final_test_accuracy", "test"))
# Shown after the accuracies where the runs have them: whether a run fit its data, and LookSAM's
# g_v drift between its SAM steps (the mean over the run's evaluations; looksam/train.py DRIFT_KEYS).
EXTRAS = (("final_train_loss", "train loss", ".4f"), ("g_v_cos_prev", "cos(g_v, previous g_v)", ".3f"),
          ("g_v_change", "‖Δg_v‖ / ‖g_v‖", ".3f"))


def extra_value(job, key):
    """A summary's value of key, else the mean of its history's finite values of it, else None."""
    if isinstance(job.get(key), (int, float)):
        return float(job[key])
    values = [h[key] for h in job.get("history") or [] if isinstance(h.get(key), (int, float))
              and math.isfinite(h[key])]
    return sum(values) / len(values) if values else None


def load(directory) -> list[dict]:
    runs, copies = [], []
    for path in sorted(pathlib.Path(directory).rglob(summary_file.FILE)):
        summary = summary_file.read(path.parent)
        job = {**summary, "status": summary.status, "_path": str(path.parent)}
        (copies if summary.evidence_from else runs).append(job)
    # same config (seed included, labels and paths aside: run_identity.changes) = the same run
    return runs + [c for c in copies if not any(
        not run_identity.changes(c.get("config") or {}, r.get("config") or {}) for r in runs)]


def _flat(job) -> dict:
    flat = run_identity.flatten(job.get("config") or {})
    return {**run_identity.added_later_defaults(), **flat} if flat else flat


def swept_keys(jobs: Sequence[dict]) -> list[str]:
    flats = [_flat(j) for j in jobs if j.get("config")]
    keys = set().union(*flats) if flats else set()
    resumable = tuple(run_identity.RESUMABLE)
    out = []
    for key in sorted(keys):
        if key in IGNORED or any(key == k or key.startswith(k + ".") for k in resumable):
            continue
        if len({json.dumps(f.get(key), sort_keys=True) for f in flats}) > 1:
            out.append(key)
    return out


def point(job, keys) -> tuple:
    flat = _flat(job)
    if not flat:  # a job that failed before its config resolved: its folder names the point
        labels = dict(part.split("=", 1) for part in pathlib.Path(job["_path"]).parts if "=" in part)
        return tuple(labels.get(k, "?") for k in keys)
    return tuple(flat.get(k) for k in keys)


def _stats(values) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def entries(jobs, keys) -> dict[tuple, dict]:
    by_point: dict[tuple, dict] = {}
    for job in jobs:
        e = by_point.setdefault(point(job, keys), {"values": {k: [] for k, _ in METRICS},
                                                   "extras": {k: [] for k, _, _ in EXTRAS},
                                                   "completed": 0, "other": []})
        status = job.get("status")
        if status == "completed":
            e["completed"] += 1
            for key, _ in METRICS:
                if isinstance(job.get(key), (int, float)):
                    e["values"][key].append(float(job[key]))
            for key, _, _ in EXTRAS:
                if (value := extra_value(job, key)) is not None:
                    e["extras"][key].append(value)
        else:
            seed = (job.get("config") or {}).get("trainer", {}).get("seed", "?")
            e["other"].append(f"seed{seed} {status}")
    return by_point


def text(e) -> str:
    parts = [f"{label} {_stats(e['values'][key])}" for key, label in METRICS]
    parts += [f"{label} {sum(v) / len(v):{fmt}}" for key, label, fmt in EXTRAS
              if (v := e.get("extras", {}).get(key))]
    out = " · ".join(parts) + f" (n={e['completed']})"
    return out + ("".join(f" ✗ {x}" for x in e["other"]) if e["other"] else "")


def _show(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def grid(jobs, keys) -> tables.Table:
    """The sweep's points as the table model: rows by columns for two swept keys, else a line each."""
    by_point = entries(jobs, keys)
    if len(keys) == 2:
        rows = sorted({p[0] for p in by_point}, key=_order)
        cols = sorted({p[1] for p in by_point}, key=_order)
        return tables.Table.of([f"{keys[0]} \\ {keys[1]}", *(_show(c) for c in cols)],
                               [[_show(r), *(text(by_point[(r, c)]) if (r, c) in by_point else "—"
                                             for c in cols)] for r in rows])
    return tables.Table.of([*(keys or ["point"]), "result"],
                           [[*(_show(v) for v in (p or ("all",))), text(by_point[p])]
                            for p in sorted(by_point, key=lambda p: tuple(_order(v) for v in p))])


def markdown(directory, jobs=None) -> str:
    jobs = load(directory) if jobs is None else jobs
    if not jobs:
        raise ValueError(f"no summary.json under {directory}: nothing to render")
    keys = swept_keys(jobs)
    lines = [f"# Sweep: {directory}", "",
             f"{len(jobs)} job(s); swept: {', '.join(keys) or 'nothing (one point)'}. Each entry: "
             "final validation and test accuracy (%), mean ± sample std over seeds, then the means "
             "of the final train loss and, for LookSAM, of its g_v drift, n completed; "
             "✗ marks a failed or diverged job.", ""]
    return "\n".join(lines + writers.markdown_table(grid(jobs, keys))) + "\n"


def _order(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def heatmap(directory, out: pathlib.Path, jobs=None, metric: str = "final_validation_accuracy"):
    """Two swept keys: the mean of `metric` per point as a PNG; returns the path or None."""
    jobs = load(directory) if jobs is None else jobs
    keys = swept_keys(jobs)
    if len(keys) != 2:
        return None
    by_point = entries(jobs, keys)
    rows = sorted({p[0] for p in by_point}, key=_order)
    cols = sorted({p[1] for p in by_point}, key=_order)

    def mean(point):
        values = by_point[point]["values"][metric] if point in by_point else []
        return 100 * sum(values) / len(values) if values else None

    fig = Figure(figsize=(1.2 * len(cols) + 2, 0.8 * len(rows) + 1.5), layout="tight")
    ax = fig.add_subplot()
    figures.heat_grid(fig, ax, [[mean((r, c)) for c in cols] for r in rows], [_show(c) for c in cols],
                      [_show(r) for r in rows], lambda v: f"{v:.1f}", missing="✗",
                      colorbar_label=f"{metric} (%)")
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    figures.save(fig, out)
    return out
