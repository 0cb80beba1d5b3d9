#!/usr/bin/env python
"""Every ESAM-related ResNet-18 / CIFAR-10 cell at one scale, in one Markdown table: the
attribution of ESAM > SAM's failure (docs/evidence.md, "ESAM at afternoon").

    python scripts/esam_attribution.py                       # the committed evidence
    python scripts/esam_attribution.py --runs runs/evidence  # a runs folder (partial runs too)

Per cell: its reading, the seeds completed, final test accuracy (mean ± sample std over the
completed seeds), test accuracy and mean train loss at epoch 25 (the first evaluation) and the
final train loss (means over every seed that reached them, partial runs included, their count in
brackets), images/s (the runs' own, of different days: not a speed comparison), and the final
test accuracy against the same reading's SAM cell: d ± 2 SE in points and the verdict of "cell >
SAM" by the claims' one rule (results/claims.py; "1 seed" where a side has one). Summaries are
read through results.collect, the layout is reproduce.registry's.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from reproduce import registry  # noqa: E402
from results import claims, collect, evidence  # noqa: E402

# (table, reading, cell, sweep point or None): SGD-M, SAM and ESAM in both readings, the
# ablation columns, and SAM at ESAM's radius rho / beta = 0.05 / 0.6.
CELLS = [
    ("esam_table1", None, "resnet18_cifar10/sgd", None),
    ("esam_table1", None, "resnet18_cifar10/sam", None),
    ("esam_table1", None, "resnet18_cifar10/esam", None),
    ("esam_table3", None, "resnet18_cifar10/swp", None),
    ("esam_table3", None, "resnet18_cifar10/sds", None),
    ("esam_table1", None, "resnet18_cifar10/sam", "sam.rho=0.083333"),  # --sweep sam.rho=0.083333
    ("esam_table1", "code", "resnet18_cifar10/sgd", None),
    ("esam_table1", "code", "resnet18_cifar10/sam", None),
    ("esam_table1", "code", "resnet18_cifar10/esam", None),
]
EPOCH = 25.0
SAM = "resnet18_cifar10/sam"


def mean_text(values, scale=1.0, fmt=".2f", spread=False) -> str:
    if not values:
        return "—"
    mean, std = collect.mean_std([v * scale for v in values])
    text = f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if spread and std is not None else "")
    return f"{text} ({len(values)})"


def finals(root, scale, table, reading, cell, variant) -> tuple[list, list]:
    """((status, summary) of every seed that has a summary, the completed seeds' final test %)."""
    r, c = cell.split("/")
    cell_dir = registry.run_dir(root, table, scale, r, c, 0, variant, reading).parent
    seeds = [collect.read_seed(p) for p in sorted(cell_dir.glob("seed*")) if p.is_dir()]
    seeds = [(status, s) for status, s in seeds if s]
    return seeds, [100 * s["final_test_accuracy"] for status, s in seeds if status == "completed"]


def against(values, sam_values) -> str:
    """`values > sam_values` by the claims' rule: d ± 2 SE (points) and the verdict."""
    result, d, se = claims.verdict(">", values, sam_values)
    if d is None:
        return "—"
    return f"{d:+.2f}" + (f" ± {2 * se:.2f}" if se is not None else "") + f" ({result})"


def row(root, scale, sam_final, table, reading, cell, variant) -> str | None:
    """One cell's line; sam_final: its reading's SAM cell's final test % (None: this is that cell)."""
    seeds, final = finals(root, scale, table, reading, cell, variant)
    if not seeds:
        return None
    done = [s for status, s in seeds if status == "completed"]
    at = [h for _, s in seeds for h in s.get("history") or [] if h.get("epoch") == EPOCH]
    partial = [f"{status} at step {s.get('step')}" for status, s in seeds if status != "completed"]
    return " | ".join([
        reading or registry.PAPER, f"{cell}{'/' + variant if variant else ''}",
        f"{len(done)}" + (f" (+ {', '.join(partial)})" if partial else ""),
        mean_text(final, 1, spread=True),
        mean_text([h["test_accuracy"] for h in at], 100),
        mean_text([h["train_loss"] for h in at if h.get("train_loss") is not None], 1, ".3f"),
        mean_text([s["final_train_loss"] for s in done], 1, ".4f"),
        mean_text([s["images_per_sec"] for s in done], 1, ".0f"),
        against(final, sam_final) if sam_final is not None else "—"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(evidence.EVIDENCE_DIR), help="default: the committed evidence")
    p.add_argument("--scale", default="afternoon", choices=registry.scale_names())
    args = p.parse_args(argv)
    print("| reading | cell | seeds completed | final test % | test % at epoch 25 | train loss at "
          "epoch 25 | final train loss | images/s | cell > SAM: final test % d ± 2 SE (verdict) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    sam_final = {reading: finals(args.runs, args.scale, "esam_table1", reading, SAM, None)[1]
                 for reading in {spec[1] for spec in CELLS}}  # read once per reading, not per row
    for spec in CELLS:
        _, reading, cell, variant = spec
        is_sam = cell == SAM and variant is None
        line = row(args.runs, args.scale, None if is_sam else sam_final[reading], *spec)
        if line:
            print(f"| {line} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
