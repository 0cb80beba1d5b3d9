"""Collects runs' summary.json files (or wandb run summaries) and renders the papers' tables and
figures next to the paper's numbers: `python -m results render <table> --runs DIR --scale cpu`.

The path, each module importing only from those before it: collect.py reads runs into per-cell
results (looksam.summary.RunSummary) -> claims.py judges the papers' claims -> tables.py builds the
table model (the paper's grid, cost, claims) -> figures.py draws the registry's figures (PNG, SVG)
and writers.py writes a table in Markdown, LaTeX and HTML (templates/) -> render.py assembles a
table's page -> report.py the page of every table. sweep.py, landscape.py and wandb_log.py are
commands beside them; evidence.py records runs into evidence/.
"""
