"""Draws a registry figure (kind: figure) as PNG and SVG: the paper's values and ours side by side.

`plot:` keys, all optional; a missing or odd key falls back to a default and never raises:

    type      scatter | lines | heatmap | bars | curves | diagnostics | landscape  (default: bars)
    title, xlabel, ylabel                       text (defaults: the table's title, metric labels)
    panels    rows: one panel per table row (else one panel holds every row)

  scatter, lines: points are cells, y against x.
    x, y      summary/metric keys (scatter default: the first time/throughput metric and the first
              accuracy metric). A key the paper does not print (images_per_sec) is ours only.
              lines without x: x_values (one number per column), else the series' parameter
              value, else the columns in order.
    series    [{label, columns: [column ids], parameter: sam.beta}, ...]: one line per series
              (default: one series of every column).
    connect   join a series' points in column order (lines: true, scatter: false)
    annotate  column | parameter | none: label each point (scatter: column, lines: none)
    points_from  {table: other id, columns: [...]}: that table's cells of the same row drawn as
              isolated points (ESAM Figure 3's SGD/SAM/ESAM dots)
    xscale, yscale  linear | log
    normalise  scatter only: base | <column id> | {x: base | <column id>, y: ...}. Paper and ours
              share one panel per row, each value relative to the same row's reference column of
              its own source (hardware-bound images/s compare as ratios): an accuracy as the gain
              over the reference (difference, displayed units), anything else as the ratio to it.
              Colour: the column (legend); marker: paper (open squares) or ours (filled circles,
              the seeds' std as error bars on both axes, divided by the reference for a ratio).
              normalised_points() returns what is drawn; annotate and points_from do not apply.
  heatmap:  metric (default: the first accuracy metric) over rows (y) x columns (x); cmap.
  bars:     metric; one group per row, one bar per column.
  curves, diagnostics: TensorBoard scalars of each cell's first seed; without event files (the
              committed evidence), a series comes from the summary history of the first seed
              that keeps it: one point per evaluation, the last window's mean.
    series    [{key, label, style: solid|dashed|dotted, color}]: drawn together, one panel per
              row with `panels: rows`. A key is looked up as the tag itself, train_<key>, then
              train_sam_<key>.
    tags      tag names (or the series' tags, in order). With tags and no series: one panel per tag.
              Defaults: curves [test_accuracy]; diagnostics [train_sam_cos_g_gs, train_sam_g_v_norm].
    x         step | epoch (epoch divides by the run's steps_per_epoch from summary.json)
    y         the y axis label; cells: the "row/column" ids to draw (default: every cell)
    paper_curves  {label: [[x, y], ...]} points read off the paper's figure, drawn dashed.
    Without either, a panel says which data is missing.
  landscape: one 3-D loss surface per cell (its first seed) from <seed dir>/<dir>/landscape.npz,
    which `python -m results landscape <seed dir>` writes (results/landscape.py); dir (default
    landscape); cells: the ids to draw (default: every cell); one z range for all. A cell
    without the file says which command makes it.

Panels "Paper" (its printed values; left out when it prints none) and "Ours (<scale>)" (mean over
seeds, sample std as error bars), except a normalised scatter, which draws both in one.
Drawn on matplotlib's object API: no pyplot state, the Agg (PNG) and SVG canvases are used directly.
"""

from __future__ import annotations

import math
import pathlib
import sys
import textwrap
import weakref

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from looksam import landscape as landscape_lib
from looksam import summary as summary_file
from reproduce import compose, registry
from results import collect as collect_lib
from results import tables


class DrawError(ValueError):
    """A figure that could not be drawn: its table, plot type and cause."""


DEFAULT_TAGS = {"curves": ["test_accuracy"], "diagnostics": ["train_sam_cos_g_gs", "train_sam_g_v_norm"]}
LINESTYLES = {"solid": "-", "dashed": "--", "dotted": ":", "dashdot": "-."}


# ---- values ----------------------------------------------------------------------------------

def _metric(table, key):
    return next((m for m in table.metrics if m.key == key), None)


def _default_key(table, kinds) -> str | None:
    return next((m.key for m in table.metrics if m.kind in kinds), None)


def _label(table, key, fallback: str = "") -> str:
    metric = _metric(table, key)
    return metric.label if metric else (key or fallback)


def paper_value(table, cell, key) -> tuple[float | None, float | None]:
    metric = _metric(table, key)
    if metric is None or cell is None:
        return None, None
    return tables.paper_mean_std(cell.paper[table.metrics.index(metric)])


def ours_value(table, results, cell, key) -> tuple[float | None, float | None]:
    """(mean, std) in the metric's displayed units; a key outside the metrics is shown raw."""
    result = results.get(cell.id) if cell is not None else None
    if result is None or not key:
        return None, None
    if key in result.mean:
        mean, std = result.mean[key], result.std.get(key)
    else:  # not collected by default: read it off the completed seeds' summaries
        values = [s.number(key) for s in result.summaries]
        mean, std = collect_lib.mean_std([v for v in values if v is not None])
    scale = _metric(table, key).scale if _metric(table, key) else 1.0
    return (None if mean is None else mean * scale), (None if std is None else std * scale)


def _has_paper_values(table) -> bool:
    return any(tables.paper_mean_std(v)[0] is not None for c in table.cells for v in c.paper)


def sources(table, results, scale):
    """[(panel title, (table, cell, key) -> (mean, std))]: the paper's when it prints any, ours."""
    out = []
    if _has_paper_values(table):
        out.append(("Paper", lambda t, cell, key: paper_value(t, cell, key)))
    out.append((f"Ours ({scale})", lambda t, cell, key, r=results: ours_value(t, r, cell, key)))
    return out


def _cell(table, row_id, column_id):
    return next((c for c in table.cells if c.row == row_id and c.column == column_id), None)


def parameter_value(cell, parameter: str | None):
    """The value of `parameter` (e.g. sam.beta) in the cell's composed config (the registry's
    setting: scale=paper), else None."""
    if cell is None or not parameter:
        return None
    return compose.value(cell, parameter)


def _series(table, plot) -> list[dict]:
    columns = [c["id"] for c in table.columns]
    series = [s for s in plot.get("series") or [] if isinstance(s, dict) and s.get("columns")]
    series = [{**s, "columns": [c for c in s["columns"] if c in columns]} for s in series]
    return [s for s in series if s["columns"]] or [{"label": None, "columns": columns}]


def _row_groups(table, plot) -> list[list[dict]]:
    return [[row] for row in table.rows] if plot.get("panels") == "rows" else [list(table.rows)]


def _axes_grid(fig, n_sources: int, n_groups: int):
    """axes[source][group]; one group of several sources lies side by side."""
    if n_groups == 1:
        return [[fig.add_subplot(1, n_sources, s + 1)] for s in range(n_sources)]
    return [[fig.add_subplot(n_sources, n_groups, s * n_groups + g + 1) for g in range(n_groups)]
            for s in range(n_sources)]


NO_DATA_WIDTH = 38  # characters per line at fontsize 8 in the narrowest (4-panel) figure
# The panels that hold only a "data missing" (or "no values") note, for has_data.
_EMPTY_PANELS: weakref.WeakSet = weakref.WeakSet()


def _no_data(ax, text: str):
    """Writes `text` in the middle of a panel that shows no data (has_data counts it as empty)."""
    # Wrapped here, not with matplotlib's wrap=True: that wraps at the figure's width, so a long
    # message spills over the neighbouring panels and tight_layout shrinks every axis to fit it.
    lines = [w for line in text.split("\n")
             for w in (textwrap.wrap(line, NO_DATA_WIDTH, break_on_hyphens=False) or [""])]
    ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    _EMPTY_PANELS.add(ax)


def has_data(fig) -> bool:
    """Whether a figure `build` made shows any data: False when every panel is a "data missing"
    or "no values" note (the report lists such a figure as not run instead of drawing it)."""
    return any(ax not in _EMPTY_PANELS for ax in fig.axes)


def _set_scale(ax, plot, axis):
    value = plot.get(f"{axis}scale")
    if value in ("linear", "log", "symlog"):
        getattr(ax, f"set_{axis}scale")(value)


def _panel_title(source_title, group, n_groups):
    return source_title if n_groups == 1 else f"{source_title}: {group[0]['label']}"


# ---- scatter and lines ---------------------------------------------------------------------------

def _xy_points(table, value, row, series, plot, x, y):
    """[(x, (y, yerr), annotation)] of one row and series, in column order."""
    x_values = plot.get("x_values")
    columns = [c["id"] for c in table.columns]
    points = []
    for column_id in series["columns"]:
        cell = _cell(table, row["id"], column_id)
        if cell is None:
            continue
        if x:
            px = value(table, cell, x)[0]
        elif isinstance(x_values, list) and len(x_values) == len(columns):
            px = x_values[columns.index(column_id)]
        elif series.get("parameter"):
            px = parameter_value(cell, series["parameter"])
        else:
            px = columns.index(column_id)
        py = value(table, cell, y)
        if isinstance(px, (int, float)) and py[0] is not None:
            annotate = plot.get("annotate")
            text = (parameter_value(cell, series.get("parameter")) if annotate == "parameter"
                    else table.label("column", column_id) if annotate == "column" else None)
            points.append((px, py, text))
    return points


def _other_table_points(plot, row, is_paper, other, x, y):
    """Isolated points from `points_from`: [(x, y, label)] of the other table's same row, from its
    paper values in the paper panel and from its runs in ours."""
    spec = plot.get("points_from")
    if not isinstance(spec, dict) or other is None or not x:
        return []
    table, results = other
    points = []
    for column_id in spec.get("columns") or [c["id"] for c in table.columns]:
        cell = _cell(table, row["id"], column_id)
        if cell is None:
            continue
        get = (lambda key, c=cell: paper_value(table, c, key)) if is_paper else (
            lambda key, c=cell: ours_value(table, results, c, key))
        px, py = get(x)[0], get(y)[0]
        if px is not None and py is not None:
            points.append((px, py, table.label("column", column_id)))
    return points


def xy(fig, table, results, plot, scale, context):
    kind = plot.get("type")
    x = plot.get("x") or (_default_key(table, tables.RATIO_KINDS) if kind == "scatter" else None)
    y = plot.get("y") or plot.get("metric") or _default_key(table, ("accuracy",))
    plot = {"connect": kind == "lines", "annotate": "column" if kind == "scatter" else None, **plot}
    all_series, groups, srcs = _series(table, plot), _row_groups(table, plot), sources(table, results, scale)
    if any(se.get("parameter") for se in all_series) and (not x or plot["annotate"] == "parameter"):
        compose.configs(table.cells)  # the cells' parameter values, composed in one Hydra context
    axes = _axes_grid(fig, len(srcs), len(groups))
    for s, (title, value) in enumerate(srcs):
        for g, group in enumerate(groups):
            ax, drawn, labelled = axes[s][g], False, False
            for r, row in enumerate(group):
                for i, series in enumerate(all_series):
                    points = _xy_points(table, value, row, series, plot, x, y)
                    if not points:
                        continue
                    drawn = True
                    yerr = [p[1][1] or 0.0 for p in points]
                    label = " ".join(t for t in (row["label"] if len(group) > 1 else None,
                                                 series.get("label")) if t) or None
                    labelled = labelled or label is not None
                    ax.errorbar([p[0] for p in points], [p[1][0] for p in points],
                                yerr=yerr if any(yerr) else None, fmt="o-" if plot["connect"] else "o",
                                color=f"C{(i if len(all_series) > 1 else r) % 10}", label=label, capsize=2)
                    for px, (py, _), text in points:
                        if text is not None:
                            ax.annotate(str(text), (px, py), textcoords="offset points", xytext=(4, 4),
                                        fontsize=7)
                for px, py, text in _other_table_points(plot, row, title == "Paper", context["other"], x, y):
                    drawn = True
                    ax.plot([px], [py], "s", color="0.3")
                    ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, -10), fontsize=7)
            if not drawn:
                _no_data(ax, "no values")
            elif labelled:
                ax.legend(fontsize=7)
            if not x and not plot.get("x_values") and not any(se.get("parameter") for se in all_series):
                ax.set_xticks(range(len(table.columns)), [c["label"] for c in table.columns],
                              fontsize=7, rotation=30)
            ax.set_title(_panel_title(title, group, len(groups)), fontsize=9)
            ax.set_xlabel(plot.get("xlabel") or _label(table, x, all_series[0].get("parameter") or ""))
            ax.set_ylabel(plot.get("ylabel") or _label(table, y))
            _set_scale(ax, plot, "x")
            _set_scale(ax, plot, "y")


# ---- normalised scatter ---------------------------------------------------------------------------

def normalise_refs(table, plot) -> dict[str, str] | None:
    """`normalise:` as {"x": column id, "y": column id}: base (the table's base_column), a column
    id, or {x: ..., y: ...} per axis; None when the plot does not normalise (or names no column)."""
    spec = plot.get("normalise")
    if not spec:
        return None
    columns = {c["id"] for c in table.columns}

    def ref(value):
        value = table.base_column if value in ("base", True) else value
        return value if value in columns else None

    refs = ({axis: ref(spec.get(axis, "base")) for axis in ("x", "y")} if isinstance(spec, dict)
            else {axis: ref(spec) for axis in ("x", "y")})
    if not all(refs.values()):
        print(f"warning: {table.id}: normalise {spec!r} names no column (base_column "
              f"{table.base_column!r}); drawn unnormalised", file=sys.stderr)
        return None
    return refs


def _relative(table, key) -> str:
    """How a value of `key` compares to its reference: gain (accuracy: the difference, in the
    metric's displayed units) or ratio (time, throughput and any key outside the metrics)."""
    metric = _metric(table, key)
    return "gain" if metric is not None and metric.kind == "accuracy" else "ratio"


def relative(mode: str, value: float | None, ref: float | None) -> float | None:
    if value is None or ref is None:
        return None
    if mode == "gain":
        return value - ref
    return value / ref if ref else None


def _relative_err(mode: str, std: float | None, ref: float | None) -> float:
    if not std or ref is None:
        return 0.0
    return std if mode == "gain" else (std / abs(ref) if ref else 0.0)


def normalised_label(table, key, ref_column) -> str:
    ref = table.label("column", ref_column)
    if _relative(table, key) == "gain":
        metric = _metric(table, key)
        unit = "points" if metric.scale == 100 else "difference"
        return f"{_label(table, key)}: gain over {ref} ({unit})"
    return f"{_label(table, key)} relative to {ref} (x)"


def _xy_keys(table, plot):
    x = plot.get("x") or _default_key(table, tables.RATIO_KINDS)
    y = plot.get("y") or plot.get("metric") or _default_key(table, ("accuracy",))
    return x, y


def normalised_points(table, results, plot, scale: str = "cpu") -> list[dict]:
    """The points a normalised scatter draws, paper's and ours on the same axes: per source
    ("paper", "ours"), row and column (in series and column order) x and y relative to the
    reference column of the same row and source (`normalise_refs`): a ratio, or for accuracy the
    gain (difference in displayed units); xerr and yerr are the cell's own spread over seeds (the
    paper's printed std) on that scale. A point whose value or reference is missing is left out.
    [{source, row, column, series, x, y, xerr, yerr}]"""
    refs = normalise_refs(table, plot)
    x, y = _xy_keys(table, plot)
    if refs is None or not x or not y:
        return []
    modes = {"x": _relative(table, x), "y": _relative(table, y)}
    getters = [("paper", lambda t, cell, key: paper_value(t, cell, key)),
               ("ours", lambda t, cell, key: ours_value(t, results, cell, key))]
    if not _has_paper_values(table):
        getters = getters[1:]
    points = []
    for source, value in getters:
        for row in table.rows:
            ref = {axis: value(table, _cell(table, row["id"], refs[axis]), key)[0]
                   for axis, key in (("x", x), ("y", y))}
            for i, series in enumerate(_series(table, plot)):
                for column_id in series["columns"]:
                    cell = _cell(table, row["id"], column_id)
                    if cell is None:
                        continue
                    (vx, sx), (vy, sy) = value(table, cell, x), value(table, cell, y)
                    px, py = relative(modes["x"], vx, ref["x"]), relative(modes["y"], vy, ref["y"])
                    if px is None or py is None:
                        continue
                    points.append({"source": source, "row": row["id"], "column": column_id, "series": i,
                                   "x": px, "y": py, "xerr": _relative_err(modes["x"], sx, ref["x"]),
                                   "yerr": _relative_err(modes["y"], sy, ref["y"])})
    return points


# Ours first, so that the paper's open squares stay visible on top of a coinciding point.
SOURCE_STYLE = {"ours": {"marker": "o", "fill": None, "line": "-"},
                "paper": {"marker": "s", "fill": "none", "line": "--"}}


def normalised_scatter(fig, table, results, plot, scale, context):
    """Paper and ours in one panel per row, on axes relative to the reference columns: the colour
    is the column (legend), the marker the source (paper: open squares, ours: filled circles, with
    the seeds' std as error bars on both axes)."""
    refs = normalise_refs(table, plot)
    x, y = _xy_keys(table, plot)
    points = normalised_points(table, results, plot, scale)
    columns = [c["id"] for c in table.columns]
    sources_shown = {"paper": "Paper", "ours": f"Ours ({scale})"}
    rows = list(table.rows)
    used_columns, used_sources = set(), set()
    for r, row in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, r + 1)
        row_points = [p for p in points if p["row"] == row["id"]]
        refs_text = " and ".join(dict.fromkeys(table.label("column", c) for c in refs.values()))
        if not row_points:
            _no_data(ax, f"no values: no cell with a value and a reference ({refs_text}) to divide by")
            ax.set_title(str(row["label"]), fontsize=9)
            continue
        for source, style in SOURCE_STYLE.items():
            mine = [p for p in row_points if p["source"] == source]
            if not mine:
                continue
            used_sources.add(source)
            if plot.get("connect"):
                for i in sorted({p["series"] for p in mine}):
                    line = [p for p in mine if p["series"] == i]
                    ax.plot([p["x"] for p in line], [p["y"] for p in line], style["line"], color="0.6",
                            linewidth=1, zorder=1)
            for p in mine:
                color = f"C{columns.index(p['column']) % 10}"
                used_columns.add(p["column"])
                ax.errorbar([p["x"]], [p["y"]], xerr=[p["xerr"]] if p["xerr"] else None,
                            yerr=[p["yerr"]] if p["yerr"] else None, fmt=style["marker"], color=color,
                            markerfacecolor=style["fill"] or color, markersize=7, capsize=2,
                            zorder=3 if source == "paper" else 2)
        missing = [sources_shown[s] for s in sources_shown if s not in {p["source"] for p in row_points}
                   and (s == "ours" or _has_paper_values(table))]
        if missing:
            ax.text(0.01, 0.01, f"{', '.join(missing)}: no points (a cell or its reference "
                    f"{refs_text} has no value)", transform=ax.transAxes, fontsize=7, color="0.4")
        for axis, key in (("x", x), ("y", y)):
            reference = 0.0 if _relative(table, key) == "gain" else 1.0
            (ax.axvline if axis == "x" else ax.axhline)(reference, color="0.8", linestyle=":", zorder=0)
        ax.set_title(f"{row['label']}: " + " and ".join(sources_shown[s] for s in sources_shown
                                                         if s in {p["source"] for p in row_points}),
                     fontsize=9)
        ax.set_xlabel(plot.get("xlabel") or normalised_label(table, x, refs["x"]))
        ax.set_ylabel(plot.get("ylabel") or normalised_label(table, y, refs["y"]))
        _set_scale(ax, plot, "x")
        _set_scale(ax, plot, "y")
    handles = [Line2D([], [], marker="o", linestyle="", color=f"C{columns.index(c) % 10}",
                      label=table.label("column", c)) for c in columns if c in used_columns]
    handles += [Line2D([], [], marker=SOURCE_STYLE[s]["marker"], linestyle=SOURCE_STYLE[s]["line"],
                       color="0.3", markerfacecolor="none" if s == "paper" else "0.3", label=sources_shown[s])
                for s in sources_shown if s in used_sources]
    if handles:  # beside the first panel, outside the data (constrained layout makes room)
        fig.axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)


# ---- heatmap and bars ---------------------------------------------------------------------------

def heat_grid(fig, ax, grid, xlabels, ylabels, text, cmap: str = "viridis", missing: str = "",
              colorbar_label: str = "") -> None:
    """A grid of values (None: none there) as coloured cells, each value written in by `text`;
    `missing` is written where there is none (the heatmap figure type and results/sweep.py)."""
    data = [[math.nan if v is None else v for v in row] for row in grid]
    image = ax.imshow(data, cmap=cmap, aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label)
    for r, row in enumerate(grid):
        for c, v in enumerate(row):
            if v is not None or missing:
                ax.text(c, r, missing if v is None else text(v), ha="center", va="center", fontsize=7,
                        color="w")
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)


def heatmap(fig, table, results, plot, scale, context):
    key = plot.get("metric") or plot.get("y") or _default_key(table, ("accuracy",))
    metric = _metric(table, key)
    srcs = sources(table, results, scale)
    for ax, (title, value) in zip(_axes_grid(fig, len(srcs), 1), srcs, strict=True):
        ax = ax[0]
        grid = [[value(table, _cell(table, r["id"], c["id"]), key)[0] for c in table.columns]
                for r in table.rows]
        if all(v is None for row in grid for v in row):
            _no_data(ax, "no values")
        else:
            heat_grid(fig, ax, grid, [c["label"] for c in table.columns], [r["label"] for r in table.rows],
                      lambda v: tables.fmt(v, tables.metric_spec(metric) if metric else ".3g"),
                      cmap=plot.get("cmap") or "viridis")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(plot.get("xlabel") or "")
        ax.set_ylabel(plot.get("ylabel") or "")


def bars(fig, table, results, plot, scale, context):
    key = plot.get("metric") or plot.get("y") or _default_key(table, ("accuracy",)) or \
        _default_key(table, tables.RATIO_KINDS)
    width = 0.8 / max(len(table.columns), 1)
    srcs = sources(table, results, scale)
    for ax, (title, value) in zip(_axes_grid(fig, len(srcs), 1), srcs, strict=True):
        ax, heights = ax[0], []
        for j, col in enumerate(table.columns):
            xs, ys, errs = [], [], []
            for r, row in enumerate(table.rows):
                mean, std = value(table, _cell(table, row["id"], col["id"]), key)
                if mean is not None:
                    xs.append(r + (j - (len(table.columns) - 1) / 2) * width)
                    ys.append(mean)
                    errs.append(std or 0.0)
            if ys:
                heights += list(zip(ys, errs, strict=True))
                ax.bar(xs, ys, width, yerr=errs if any(errs) else None, color=f"C{j % 10}",
                       label=col["label"], capsize=2)
                spec = tables.metric_spec(_metric(table, key)) if _metric(table, key) else ".4g"
                for px, py in zip(xs, ys, strict=True):
                    ax.annotate(tables.fmt(py, spec), (px, py), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7)
        if heights:
            ax.legend(fontsize=7)
            low, high = min(h - e for h, e in heights), max(h + e for h, e in heights)
            if plot.get("zoom", True) and low > 0:
                # Accuracies differ by tenths of a point: start the axis near the data, not at zero.
                pad = 0.1 * (high - low) + 0.5
                ax.set_ylim(max(low - 3 * pad, 0), high + pad)
        else:
            _no_data(ax, "no values")
        ax.set_xticks(range(len(table.rows)), [r["label"] for r in table.rows], fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(plot.get("ylabel") or _label(table, key))


# ---- TensorBoard curves ------------------------------------------------------------------------

def read_scalars(run_dir, tags) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the event files under run_dir ({} without any)."""
    event_dirs = sorted({p.parent for p in pathlib.Path(run_dir).rglob("events.out.tfevents*")})
    if not event_dirs:
        return {}
    # TensorBoard's readers (TensorFlow's protos): loaded only for a run that has event files
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    curves: dict[str, list[tuple[int, float]]] = {}
    for d in event_dirs:
        acc = ea.EventAccumulator(str(d), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        acc.Reload()
        available = acc.Tags()
        for tag in tags:
            if tag in available.get("scalars", []):
                points = [(e.step, e.value) for e in acc.Scalars(tag)]
            elif tag in available.get("tensors", []):  # tf.summary (clu) writes scalars as tensors
                points = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            else:
                continue
            curves.setdefault(tag, []).extend(points)
    return {tag: sorted(dict(points).items()) for tag, points in curves.items()}


def _seed_dirs(runs_dir, table, scale, cell) -> list[pathlib.Path]:
    if runs_dir is None:
        return []
    cell_dir = registry.run_dir(runs_dir, table.id, scale, cell.row, cell.column, 0,
                                reading=table.reading_name).parent
    return sorted(p for p in cell_dir.glob("seed*") if p.is_dir())


def _first_seed_dir(runs_dir, table, scale, cell):
    seeds = _seed_dirs(runs_dir, table, scale, cell)
    return seeds[0] if seeds else None


def _curve_series(plot, kind) -> tuple[list[dict], bool]:
    """([{tags: candidates, label, style, color}], whether they share one panel)."""
    tags = plot.get("tags")
    tags = [tags] if isinstance(tags, str) else [str(t) for t in tags or []]
    series = [s for s in plot.get("series") or [] if isinstance(s, dict) and s.get("key")]
    if series:
        return [{**s, "tags": ([tags[i]] if i < len(tags) else []) +
                 [s["key"], f"train_{s['key']}", f"train_sam_{s['key']}"]}
                for i, s in enumerate(series)], True
    tags = tags or DEFAULT_TAGS.get(kind, DEFAULT_TAGS["curves"])
    return [{"key": t, "label": t, "tags": [t]} for t in tags], False


def _steps_per_epoch(seed_dir) -> float | None:
    summary = summary_file.read(seed_dir)
    value = summary.number("steps_per_epoch") if summary else None
    return value if value and value > 0 else None


def _load_curves(table, cells, series, runs_dir, scale, by_epoch: bool):
    """cell id -> (series key -> [(x, y)], x unit: epoch when asked and known, else step)."""
    tags = [t for s in series for t in s["tags"]]
    data = {}
    for cell in cells:
        seed_dir = _first_seed_dir(runs_dir, table, scale, cell)
        try:
            scalars = read_scalars(seed_dir, tags) if seed_dir else {}
        except Exception as e:  # noqa: BLE001 - a corrupt event file must not stop the report
            print(f"warning: {table.id} {cell.id}: cannot read event files: {e}", file=sys.stderr)
            scalars = {}
        per_epoch = _steps_per_epoch(seed_dir) if seed_dir and by_epoch else None
        curves, unit, histories = {}, "epoch" if per_epoch else "step", None
        for s in series:
            points = next((scalars[t] for t in s["tags"] if scalars.get(t)), None)
            if points:
                curves[s["key"]] = [(step / per_epoch if per_epoch else step, v) for step, v in points]
                continue
            if histories is None:  # read once per cell, only when a series lacks event files
                histories = _histories(_seed_dirs(runs_dir, table, scale, cell))
            if points := _history_points(histories, s):
                epochs = by_epoch and all(epoch is not None for _, epoch, _ in points)
                curves[s["key"]] = [(epoch if epochs else step, v) for step, epoch, v in points]
                unit = "epoch" if epochs else unit
        data[cell.id] = (curves, unit)
    return data


def _histories(seed_dirs) -> list[list]:
    """The summary history of each seed folder that has one, in seed order."""
    summaries = (summary_file.read(seed_dir) for seed_dir in seed_dirs)
    return [s.history for s in summaries if s is not None]


def _history_points(histories, series) -> list[tuple[int, float, float]]:
    """[(step, epoch, value)] of a series from the first seed's summary history that has it: a
    committed summary keeps, per evaluation, the mean of the figures' step metrics over the last
    window before it (looksam/train.py kept_in_history), so the evidence draws a coarse curve
    without event files."""
    for history in histories:
        for tag in series["tags"]:
            points = [(row.get("step"), row.get("epoch"), float(row[tag])) for row in history
                      if isinstance(row, dict) and isinstance(row.get(tag), (int, float))
                      and math.isfinite(row[tag])]
            if points:
                return points
    return []


def curves(fig, table, results, plot, scale, context):
    kind = plot.get("type", "curves")
    series, shared = _curve_series(plot, kind)
    wanted = plot.get("cells")
    cells = [c for c in table.cells if not wanted or c.id in wanted]
    by_epoch = plot.get("x") == "epoch"
    data = _load_curves(table, cells, series, context.get("runs_dir"), scale, by_epoch)
    if shared:  # every series in one panel per row group
        panels = [([c for c in cells if c.row in {r["id"] for r in g}], series, g[0]["label"] if
                   len(g) == 1 and len(table.rows) > 1 else None) for g in _row_groups(table, plot)]
    else:
        panels = [(cells, [s], s["label"]) for s in series]
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    paper_curves = plot.get("paper_curves") if isinstance(plot.get("paper_curves"), dict) else {}
    x_unit = "epoch" if by_epoch else "step"
    for p, (ax, (panel_cells, panel_series, title)) in enumerate(zip(axes, panels, strict=True)):
        drawn = False
        for c, cell in enumerate(panel_cells):
            cell_curves, unit = data[cell.id]
            for i, s in enumerate(panel_series):
                points = cell_curves.get(s["key"])
                if not points:
                    continue
                drawn, x_unit = True, unit
                where = f"({cell.id})" if len(panel_cells) > 1 else None
                label = " ".join(t for t in (s.get("label"), where) if t)
                color = s.get("color") or f"C{(i if len(panel_series) > 1 else c) % 10}"
                ax.plot([pt[0] for pt in points], [pt[1] for pt in points],
                        LINESTYLES.get(s.get("style"), "-"), color=color, label=label)
        if p == 0:
            for j, (label, points) in enumerate(paper_curves.items()):
                ok = [pt for pt in points or [] if isinstance(pt, (list, tuple)) and len(pt) == 2]
                if ok:
                    drawn = True
                    ax.plot([pt[0] for pt in ok], [pt[1] for pt in ok], "--", color=f"C{j % 10}",
                            label=f"paper: {label}")
        if drawn:
            ax.legend(fontsize=6)
        else:
            where = (f"{context['runs_dir']}/{table.id}/{scale}" if context.get("runs_dir")
                     else "no local runs directory")
            missing = ", ".join(s["tags"][0] for s in panel_series)
            _no_data(ax, f"data missing:\nno TensorBoard scalars or summary history\n"
                     f"{missing}\nunder {where}")
        _set_scale(ax, plot, "y")
        if title:
            ax.set_title(str(title), fontsize=9)
        ax.set_xlabel(plot.get("xlabel") or x_unit)
        ylabel = plot.get("ylabel") or (plot.get("y") if isinstance(plot.get("y"), str) else None)
        if ylabel:
            ax.set_ylabel(ylabel)


# ---- loss landscapes ---------------------------------------------------------------------------

def landscape_title(settings: dict) -> str:
    where = f"{settings['table']} {settings['cell']}: " if settings.get("cell") else ""
    return (f"{where}{settings['model']} / {settings['dataset']}, {settings['sam']}, step "
            f"{settings['checkpoint_step']}: training loss, {settings['groups']} group(s)")


def draw_surface(ax, result, zlim=None) -> None:
    """A 3-D surface of result's mean grid on a `projection='3d'` axes."""
    a, b = np.meshgrid(result["alphas"], result["betas"], indexing="ij")
    ax.plot_surface(a, b, np.asarray(result["loss"]), cmap="viridis", linewidth=0, antialiased=True)
    if zlim is not None:
        ax.set_zlim(*zlim)
    ax.set_xlabel("α (d1)", fontsize=8)
    ax.set_ylabel("β (d2)", fontsize=8)
    ax.set_zlabel("loss", fontsize=8)
    ax.tick_params(labelsize=6)


def landscape_figure(result, stem) -> dict[str, pathlib.Path]:
    """<stem>.png and <stem>.svg of one landscape (looksam/landscape.py): surface and contours."""
    fig = Figure(figsize=(10.0, 4.5), layout="constrained")
    draw_surface(fig.add_subplot(1, 2, 1, projection="3d"), result)
    ax = fig.add_subplot(1, 2, 2)
    loss = np.asarray(result["loss"])
    a, b = np.meshgrid(result["alphas"], result["betas"], indexing="ij")
    if loss.shape[0] > 1 and loss.shape[1] > 1 and np.ptp(loss) > 0:
        contours = ax.contour(a, b, loss, levels=min(15, loss.size), cmap="viridis")
        ax.clabel(contours, fontsize=6)
    ax.plot([0], [0], "k+")
    ax.set_xlabel("α (d1)")
    ax.set_ylabel("β (d2)")
    ax.set_aspect("equal")
    fig.suptitle(landscape_title(result["settings"]), fontsize=9)
    stem = pathlib.Path(stem)
    paths = {s: stem.parent / f"{stem.name}.{s}" for s in ("png", "svg")}
    save(fig, paths["png"], dpi=150)
    save(fig, paths["svg"])
    return paths


def landscapes(fig, table, results, plot, scale, context):
    """A landscape is computed after training, not logged by it: read the files the `landscape`
    command left in each seed folder, on one z range so the cells' sharpness compares by eye."""
    wanted = plot.get("cells")
    cells = [c for c in table.cells if not wanted or c.id in wanted]
    subdir = str(plot.get("dir") or "landscape")
    data = {}
    for cell in cells:
        seed_dir = _first_seed_dir(context.get("runs_dir"), table, scale, cell)
        data[cell.id] = (seed_dir, landscape_lib.load(seed_dir / subdir) if seed_dir else None)
    drawn = [d["loss"] for _, d in data.values() if d is not None]
    zlim = (min(float(v.min()) for v in drawn), max(float(v.max()) for v in drawn)) if drawn else None
    for i, cell in enumerate(cells):
        seed_dir, result = data[cell.id]
        label = f"{table.label('row', cell.row)}, {table.label('column', cell.column)}"
        if result is None:
            ax = fig.add_subplot(1, len(cells), i + 1)
            where = seed_dir or registry.run_dir(context.get("runs_dir") or "<runs>", table.id, scale,
                                                 cell.row, cell.column, 0, reading=table.reading_name)
            _no_data(ax, f"no {subdir}/landscape.npz:\npython -m results landscape\n{where}")
        else:
            ax = fig.add_subplot(1, len(cells), i + 1, projection="3d")
            draw_surface(ax, result, zlim if zlim and zlim[1] > zlim[0] else None)
        ax.set_title(label, fontsize=9)


# ---- entry point -------------------------------------------------------------------------------

def _other_table(table, plot, tables_dir, results_for):
    spec = plot.get("points_from")
    if not isinstance(spec, dict) or not spec.get("table"):
        return None
    try:
        directory = pathlib.Path(tables_dir or registry.TABLES_DIR)
        other = registry.load(spec["table"], directory)
        if table.reading_name in other.reading_names():  # the same reading where it has one
            other = registry.load(spec["table"], directory, reading=table.reading_name)
    except (ValueError, OSError, KeyError) as e:
        print(f"warning: points_from: {e}", file=sys.stderr)
        return None
    try:
        return other, (results_for(other) if results_for else {})
    except Exception as e:  # noqa: BLE001 - the isolated points are extras: draw without them
        print(f"warning: points_from {other.id}: {e}", file=sys.stderr)
        return other, {}


def _figsize(table, plot, kind) -> tuple[float, float]:
    if kind == "landscape":
        wanted = plot.get("cells")
        return max(4.5 * len([c for c in table.cells if not wanted or c.id in wanted]), 6.0), 4.5
    if kind in ("curves", "diagnostics"):
        series, shared = _curve_series(plot, kind)
        n = len(_row_groups(table, plot)) if shared else len(series)
        return max(5.0 * n, 8.0), 4.2
    n_sources = 2 if _has_paper_values(table) else 1
    n_groups = len(_row_groups(table, plot)) if kind in ("scatter", "lines") else 1
    if n_groups == 1:
        return max(5.5 * n_sources, 6.0), 4.5
    return 4.5 * n_groups, 4.0 * n_sources


# One drawer per registry.PLOT_TYPES (tests/test_results.py checks they match).
DRAWERS = {"scatter": xy, "lines": xy, "heatmap": heatmap, "bars": bars, "curves": curves,
           "diagnostics": curves, "landscape": landscapes}


def build(table, results, runs_dir=None, scale: str = "cpu", tables_dir=None, results_for=None) -> Figure:
    """`table` drawn on a matplotlib Figure, not yet saved (`write` saves it, `has_data` reads it).

    results_for(other_table) -> results supplies `points_from` tables (default: read runs_dir).
    """
    plot = table.plot  # checked on load (reproduce/registry.py: PLOT_TYPES, PLOT_KEYS)
    kind = plot.get("type") or "bars"
    plot = {**plot, "type": kind}
    if results_for is None and runs_dir is not None:
        def results_for(other):
            return collect_lib.collect(other, runs_dir, scale)
    normalised = kind == "scatter" and normalise_refs(table, plot) is not None
    size = (7.5, 4.6 * max(len(table.rows), 1)) if normalised else _figsize(table, plot, kind)
    fig = Figure(figsize=size, layout="constrained")
    try:
        context = {"runs_dir": runs_dir, "other": _other_table(table, plot, tables_dir, results_for)}
        draw_fn = DRAWERS[kind]
        if normalised:
            draw_fn = normalised_scatter
        draw_fn(fig, table, results, plot, scale, context)
    except Exception as e:  # a drawing bug or a plot the data cannot fill: an error naming both
        raise DrawError(f"{table.id}: could not draw its {kind} plot: {type(e).__name__}: {e}") from e
    width = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(plot.get("title") or tables.title(table), int(width * 11)), fontsize=10)
    return fig


def write(fig, stem) -> dict[str, pathlib.Path]:
    """Saves a built figure as `<stem>.png` and `<stem>.svg`; returns them by suffix."""
    stem = pathlib.Path(stem)
    paths = {suffix: stem.parent / f"{stem.name}.{suffix}" for suffix in ("png", "svg")}
    save(fig, paths["png"], dpi=150)
    save(fig, paths["svg"])
    return paths


def draw(table, results, stem, runs_dir=None, scale: str = "cpu", tables_dir=None,
         results_for=None) -> dict[str, pathlib.Path]:
    """Draws `table` into `<stem>.png` and `<stem>.svg`; returns them by suffix (see `build`)."""
    return write(build(table, results, runs_dir, scale, tables_dir, results_for), stem)


def save(fig, path, **kwargs) -> None:
    """`fig.savefig(path)`, the same bytes on every render of the same data.

    Matplotlib stamps an SVG with the time it was written and random element ids, so a committed
    render would change on every re-render even when no number in it did."""
    path = pathlib.Path(path)
    if path.suffix == ".svg":
        kwargs.setdefault("metadata", {"Date": None})
    with matplotlib.rc_context({"svg.hashsalt": "looksam"}):
        fig.savefig(path, **kwargs)
