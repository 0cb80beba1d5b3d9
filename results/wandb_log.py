"""`python -m results render TABLE --wandb-log`: a rendered table and its claims as wandb Tables.

One wandb run per table and scale (job type "render"), in the group of the table's training runs
(`<table>/<scale>[/<reading>]`, looksam.tracking.group_name), logging two Tables:

    cells   cell, row, column, metric, ours mean, ours std, n, paper, status
    claims  claim, expression, where, lhs, rhs, ours lhs, ours rhs, paper, d, 2 SE, verdict

Values are in the units the report prints (accuracy in %); `verdict` is the report's own string
(results/tables.py claim_rows), so the dashboard and the report cannot disagree. Offline runs are
written to `<out>/wandb/offline-run-*` (upload: `wandb sync`). docs/wandb.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from looksam import tracking
from results import claims as claims_lib
from results import tables

CELL_COLUMNS = ["cell", "row", "column", "metric", "ours mean", "ours std", "n", "paper", "status"]
CLAIM_COLUMNS = ["claim", "expression", "where", "lhs", "rhs", "ours lhs", "ours rhs", "paper", "d", "2 SE",
                 "verdict"]


def split_project(path: str | None, default: str = "looksam") -> tuple[str | None, str]:
    """"entity/project" or "project" -> (entity or None, project); None -> (None, default)."""
    if not path:
        return None, default
    entity, _, project = path.rpartition("/")
    return entity or None, project


def _scaled(value, metric) -> float | None:
    return None if value is None else float(value) * metric.scale


def cell_rows(table, results: Mapping) -> list[list]:
    """One row per cell and metric: our mean, std and seed count, the paper's value, the status."""
    rows = []
    for cell in table.cells:
        result = results.get(cell.id)
        for i, metric in enumerate(table.metrics):
            paper = tables.paper_mean_std(cell.paper[i])[0]
            values = result.values.get(metric.key, []) if result else []
            rows.append([cell.id, table.label("row", cell.row), table.label("column", cell.column),
                         metric.label, tables.ours_value(result, metric),
                         _scaled(result.std.get(metric.key) if result else None, metric), len(values),
                         None if paper is None else float(paper), result.status if result else "missing"])
    return rows


def wandb_claim_rows(table, results: Mapping, checks) -> list[list]:
    """One row per claim and pair of cells: the report's texts and verdict, d and 2 SE as numbers.
    `checks` is claims.check_table(table, results), computed once by the caller."""
    rows = []
    shown = tables.claim_rows(table, results, checks)  # the rendered text of the same checks
    for check, row in zip(checks, shown, strict=True):
        text = dict(zip(tables.CLAIM_HEAD, row, strict=True))
        metric = claims_lib.metric_of(table, check.claim)
        two_se = None if check.se is None else 2 * check.se
        rows.append([check.claim.id, text["Claim"], text["Where"], check.lhs_cell, check.rhs_cell,
                     text["Ours lhs"], text["Ours rhs"], text["Paper (lhs, rhs)"], _scaled(check.d, metric),
                     _scaled(two_se, metric), text["Verdict"]])
    return rows


def log(table, results: Mapping, scale: str, *, project: str, entity: str | None, mode: str | None,
        out, source: str) -> str | None:
    """Logs `table`'s cells and claims to a wandb run; returns its directory (offline) or URL
    (online), None when disabled.
    Raises RuntimeError when wandb cannot start the run (no network, no key)."""
    mode = tracking.wandb_mode(mode)
    if mode == "disabled":
        return None
    import wandb  # seconds to import, and only for --wandb-log: loaded when asked for

    os.makedirs(out, exist_ok=True)
    checks = claims_lib.check_table(table, results)
    try:
        run = wandb.init(
            project=project, entity=entity, mode=mode, dir=str(out), job_type="render",
            group=tracking.group_name(table.id, scale, table.reading_name),
            name="/".join(p for p in ("render", table.id, scale, table.reading_name) if p),
            tags=["render", f"scale:{scale}"],
            config={"table": table.id, "scale": {"name": scale}, "reading": table.reading_name,
                    "source": source},
            settings=tracking.wandb_settings(), reinit="finish_previous")
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        raise RuntimeError(f"wandb.init(mode={mode!r}) failed: {type(e).__name__}: {e}") from e
    where = os.path.dirname(run.dir) if mode == "offline" else run.url
    try:
        run.log({"cells": wandb.Table(columns=CELL_COLUMNS, data=cell_rows(table, results)),
                 "claims": wandb.Table(columns=CLAIM_COLUMNS, data=wandb_claim_rows(table, results, checks))})
        counts: dict[str, int] = {}
        for check in checks:
            verdict = check.verdict.split(",")[0]
            counts[verdict] = counts.get(verdict, 0) + 1
        run.summary.update({"claims_summary": claims_lib.summary_line(checks),
                            **{f"claims/{v}": n for v, n in counts.items()}})
    finally:
        run.finish()
    return where
