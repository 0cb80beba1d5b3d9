"""`python -m results landscape RUN_DIR`: a run's loss landscape computed (looksam/landscape.py,
whose docstring gives the method and the paper's settings against ours) and drawn
(results/figures.py: `landscape_figure`).

    python -m results landscape RUN_DIR [--scale cpu|paper] [--out DIR] [--grid N] [--groups G]
        [--images M] [--span S] [--seed K] [--batch B] [--chunk C] [--data-dir DIR]

It writes landscape.npz, landscape.json, landscape.png and landscape.svg to DIR (default
RUN_DIR/landscape); ESAM Figure 4's registry figure draws each cell's from there.
"""

from __future__ import annotations

import pathlib

from looksam import landscape as compute
from looksam.landscape import PRESETS, summary_numbers
from results import figures

FILES = compute.FILES


def write(result, out) -> dict[str, pathlib.Path]:
    """landscape.npz, landscape.json, landscape.png and landscape.svg in `out`."""
    paths = compute.write(result, out)
    paths.update(figures.landscape_figure(result, pathlib.Path(out) / "landscape"))
    return paths


# ---- command line ------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a trainer workdir with checkpoints/ (a cell's seed<k> folder)")
    parser.add_argument("--scale", default="cpu", choices=sorted(PRESETS),
                        help="cpu: 21x21, 1 group, 512 images (default); paper: ESAM's 100x100, 10 groups")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/landscape)")
    parser.add_argument("--grid", type=int, help="points per axis")
    parser.add_argument("--groups", type=int, help="pairs of random directions averaged")
    parser.add_argument("--images", type=int, help="training images the loss is averaged over")
    parser.add_argument("--span", type=float, help="the grid covers [-span, span]^2")
    parser.add_argument("--seed", type=int, default=0, help="seed of the directions")
    parser.add_argument("--batch", type=int, default=128, help="images per forward pass")
    parser.add_argument("--chunk", type=int, default=4, help="grid points vmapped together")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data_dir for real data (default: the run's data.data_dir, else "
                             "$TFDS_DATA_DIR); e.g. ../shared/data/tfds")


def main(args) -> int:
    preset = PRESETS[args.scale]
    chosen = {k: preset[k] if getattr(args, k) is None else getattr(args, k) for k in preset}
    run = compute.load_run(args.run_dir)
    print(f"run {run.directory}: {run.cfg.model.name} / {run.cfg.data.name}, sam={run.cfg.sam.method}, "
          f"checkpoint step {run.step}")
    result = compute.landscape(run, seed=args.seed, batch=args.batch, chunk=args.chunk,
                               data_dir=args.data_dir, **chosen)
    s, numbers = result["settings"], summary_numbers(result)
    print(f"{s['grid']}x{s['grid']} grid over [-{s['span']:g}, {s['span']:g}]^2, {s['groups']} group(s) "
          f"of filter-normalised Gaussian directions (seed {s['seed']}), {s['images']} training "
          f"images of {s['data']}" + (f" (all the split holds: fewer than {chosen['images']})"
                                      if s["images"] < chosen["images"] else ""))
    print("cos(d1, d2) per group: " + ", ".join(f"{c:+.4f}" for c in result["cosines"]))
    print(f"loss at the centre {numbers['centre_loss']:.4f}; over the grid min {numbers['min_loss']:.4f} "
          f"at ({numbers['min_at'][0]:+.3g}, {numbers['min_at'][1]:+.3g}), max {numbers['max_loss']:.4f}, "
          f"mean rise {numbers['mean_rise']:+.4f}")
    print(f"{s['grid'] ** 2 * s['groups']} loss evaluations on {s['images']} images in "
          f"{result['seconds']:.1f} s")
    paths = write(result, args.out or run.directory / "landscape")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
