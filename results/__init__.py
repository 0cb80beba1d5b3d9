"""Collects runs' summary.json files (or wandb run summaries) and renders the papers' tables and
figures next to the paper's numbers: `python -m results render <table> --runs DIR --scale cpu`.

collect.py reads runs into per-cell results; render.py writes Markdown, LaTeX and HTML; figures.py
draws the registry's figures (PNG, SVG).
"""
