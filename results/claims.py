"""The verdict rule for a paper's claims (reproduce/tables/*.yaml `claims:`), the one place it lives.

A claim says `lhs op factor * rhs` on a metric, for every pair of cells it covers. With
d = mean(lhs) - factor * mean(rhs) over the completed seeds and SE its standard error (sample std,
ddof 1, of each side; the two sides unpaired: SE^2 = s_l^2 / n_l + factor^2 s_r^2 / n_r):

    >   holds if d - 2 SE > 0,  fails if d + 2 SE < 0,  otherwise within noise
    >=  holds if d - 2 SE >= 0, fails if d + 2 SE < 0,  otherwise within noise
    ~   holds if |d| + 2 SE <= tolerance, fails if |d| - 2 SE > tolerance, otherwise within noise

`missing` when a side has no completed seed. With a single seed on a side there is no SE: the point
values decide, and the verdict says so ("holds, 1 seed"). A claim our design cannot meet (its
`by_design` says why) that fails renders as "fails (by design)".

Accuracy claims are judged on the final test accuracy (the value at the end of training, not the
best over evaluations, which would pick on the test set); time on the metric itself. Throughput
(images/s) only from a side-by-side measurement of the cells in one process
(<runs>/<table>/<scale>/throughput.json, looksam/throughput.py), never from training runs made at
other times: d = median(lhs) - factor * median(rhs) over its rounds, and SE from the rounds' values
as samples (the same 2 SE rule); `missing` without that file. The paper's own printed values pass
through the same rule as single points.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence

from results import collect

HOLDS, FAILS, NOISE, MISSING = "holds", "fails", "within noise", "missing"
BY_DESIGN = f"{FAILS} (by design)"  # a failure the claim's `by_design` explains
# Ours, per metric kind: accuracy verdicts never read a value selected on the test set.
OURS_KEY = {"accuracy": "final_test_accuracy"}


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean (collect.mean_std's sample std / sqrt(n)); None below two values."""
    _, std = collect.mean_std(values)
    return None if std is None else std / math.sqrt(len(values))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def verdict(op: str, lhs: Sequence[float], rhs: Sequence[float], factor: float = 1.0,
            tolerance: float | None = None, center=mean) -> tuple[str, float | None, float | None]:
    """(verdict, d, SE) for `lhs op factor * rhs`; SE None where a side has a single seed.
    center: how a side's values become one (the mean over seeds; the median over rounds)."""
    if not lhs or not rhs:
        return MISSING, None, None
    d = center(lhs) - factor * center(rhs)
    se_l, se_r = standard_error(lhs), standard_error(rhs)
    if se_l is None or se_r is None:
        ok = {">": d > 0, ">=": d >= 0, "~": abs(d) <= (tolerance or 0.0)}[op]
        return f"{HOLDS if ok else FAILS}, 1 seed", d, None
    se = math.sqrt(se_l**2 + factor**2 * se_r**2)
    if op == "~":
        if abs(d) + 2 * se <= tolerance:
            return HOLDS, d, se
        return (FAILS if abs(d) - 2 * se > tolerance else NOISE), d, se
    if (d - 2 * se > 0) if op == ">" else (d - 2 * se >= 0):
        return HOLDS, d, se
    return (FAILS if d + 2 * se < 0 else NOISE), d, se


def shown(claim, result: str) -> str:
    """The verdict as rendered: a failure the design explains says so."""
    if claim.by_design and result.startswith(FAILS):
        return BY_DESIGN + result[len(FAILS):]
    return result


def metric_of(table, claim):
    return next(m for m in table.metrics if m.key == claim.metric)


def ours_key(table, claim) -> str:
    return OURS_KEY.get(metric_of(table, claim).kind, claim.metric)


def paper_point(cell, table, claim) -> float | None:
    """The paper's printed value of `cell` on the claim's metric, in the metric's raw units."""
    metric = metric_of(table, claim)
    value = cell.paper[table.metrics.index(metric)]
    if isinstance(value, Mapping):
        value = value.get("mean")
    return None if value is None else float(value) / metric.scale


def evidence_source(result) -> str | None:
    """The other table's cell a result's runs were recorded from (results/evidence.py)."""
    origins = sorted({s["evidence_from"].rsplit("/seed", 1)[0] for s in getattr(result, "summaries", ())
                      if s.get("evidence_from")})
    return ", ".join(origins) or None


def ours_values(result, key: str, throughput: bool) -> tuple[float, ...]:
    """A cell's values for a claim: its completed seeds' `key`, or for a throughput metric the
    images/s of each round of the side-by-side measurement (never the runs' own images_per_sec)."""
    if result is None:
        return ()
    return tuple(getattr(result, "throughput", ())) if throughput else tuple(result.values.get(key, []))


@dataclasses.dataclass(frozen=True)
class Check:
    """One claim on one pair of cells: the paper's two values, ours, d and the verdict."""

    claim: object  # registry.Claim
    at: str  # the id on the other axis (a row for a column claim)
    lhs_cell: str
    rhs_cell: str
    paper: tuple[float | None, float | None]  # raw units
    paper_verdict: str
    ours: tuple[tuple[float, ...], tuple[float, ...]]  # completed seeds (throughput: rounds), raw units
    d: float | None
    se: float | None
    verdict: str  # as rendered (by design marked)
    sources: tuple[str | None, str | None] = (None, None)  # where reused evidence came from


def check_table(table, results: Mapping) -> list[Check]:
    """Every claim of `table` on every pair of cells it covers, from collected CellResults."""
    checks = []
    for claim in table.claims:
        key = ours_key(table, claim)
        for at, lhs, rhs in claim.pairs(table):
            paper = (paper_point(lhs, table, claim), paper_point(rhs, table, claim))
            paper_verdict = (verdict(claim.op, [paper[0]], [paper[1]], claim.factor,
                                     claim.tolerance)[0].split(",")[0]
                             if None not in paper else MISSING)
            throughput = metric_of(table, claim).kind == "throughput"
            values = [ours_values(results.get(cell.id), key, throughput) for cell in (lhs, rhs)]
            result, d, se = verdict(claim.op, values[0], values[1], claim.factor, claim.tolerance,
                                    statistics.median if throughput else mean)
            # A throughput claim's values are this table's own measurement, not shared runs.
            sources = tuple(None if throughput else evidence_source(results.get(c.id)) for c in (lhs, rhs))
            checks.append(Check(claim, at, lhs.id, rhs.id, paper, paper_verdict, tuple(values), d,
                                se, shown(claim, result), sources))
    return checks


def base_verdict(result: str) -> str:
    """The verdict without its ", 1 seed": holds, fails, fails (by design), within noise, missing."""
    return result.split(",")[0]


def verdict_counts(checks: Sequence[Check]) -> list[tuple[str, int]]:
    """(base verdict, number of checks), in the verdicts' alphabetical order."""
    counts: dict[str, int] = {}
    for c in checks:
        base = base_verdict(c.verdict)
        counts[base] = counts.get(base, 0) + 1
    return sorted(counts.items())


def summary_line(checks: Sequence[Check]) -> str:
    return ", ".join(f"{n} {v}" for v, n in verdict_counts(checks)) or "no claims"


def failed(checks: Sequence[Check]) -> list[Check]:
    """Checks whose evidence contradicts the claim (by-design failures included)."""
    return [c for c in checks if c.verdict.startswith(FAILS)]
