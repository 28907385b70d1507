"""The Trade-offs figures, shared by the dashboard page and the HTML report (``genlab report``).

Every function takes a :func:`genlab.tradeoffs.seed_summary` frame, whose rows are groups of runs
that differ only by seed, and returns a Plotly figure: points are the groups' means, error bars
one standard deviation over the seeds (none where a group has one seed). Values go in as Python
lists (``None`` for NaN), so a test can read them back from the figure's JSON.

ε is drawn on a log scale. A run without DP has ε = ∞, which no log axis holds, so it gets its
own position to the right of the largest finite ε, past a dashed break and labelled
"∞ (no DP)" (:class:`EpsilonScale`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from genlab.tradeoffs import (
    AXES,
    DEFAULT_COLOUR,
    DEFAULT_X,
    DEFAULT_Y,
    EPSILON,
    axes_title,
    count_column,
    format_epsilon,
    matrix_keys,
    metric,
    pareto_of,
    sd_column,
)

MODEL_COLOURS = ("#4C6FFF", "#E4572E", "#17A398", "#9B5DE5", "#F2A541", "#3D3B30", "#D81E5B",
                 "#6C8EAD")
MODEL_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "pentagon",
                 "hexagon")
KNOWN_MODELS = ("vae", "gan", "mixture", "pixelcnn", "cvae")  # genlab's families: fixed styles
FRONT_COLOUR = "#D81E5B"
NO_DP = "∞ (no DP)"
CURVE_KEYS = ("performance.cas", "interpretability.score", "privacy.mia_auc")
# Short axis titles where a figure has several small axes (the scatter matrix, the parallel
# coordinates, the curves); the long labels of AXES go on the big single charts.
SHORT_TITLES = {
    "performance.cas": "CAS ↑",
    "interpretability.score": "interp. score ↑",
    "privacy.mia_auc": "attack AUC ↓",
    EPSILON: "ε (log) ↓",
}


def _title(key: str) -> str:
    m = metric(key)
    return SHORT_TITLES.get(key, f"{m.short} {'↑' if m.direction == 'higher' else '↓'}")


def _list(values) -> list:
    """Floats as a list with ``None`` for NaN (JSON has no NaN)."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            for v in values]


def _layout(fig: go.Figure, title: str, height: int, **more) -> go.Figure:
    more = {"margin": dict(l=70, r=30, t=80, b=70), **more}
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), height=height,
                      font=dict(size=14), template="plotly_white", **more)
    return fig


def model_styles(models: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{model: (colour, symbol)}`` in sorted order. genlab's own families keep their style
    whichever others are shown, so a filter never recolours a model."""
    styles = {}
    others = sorted(set(models) - set(KNOWN_MODELS))
    for m in sorted(set(models)):
        i = KNOWN_MODELS.index(m) if m in KNOWN_MODELS else len(KNOWN_MODELS) + others.index(m)
        styles[m] = (MODEL_COLOURS[i % len(MODEL_COLOURS)], MODEL_SYMBOLS[i % len(MODEL_SYMBOLS)])
    return styles


# ----------------------------------------------------------------------------- the ε scale
@dataclass(frozen=True)
class EpsilonScale:
    """Where ε values sit on a log axis, ∞ included.

    Attributes:
        lo, hi: log10 of the smallest and largest finite ε (0 when there is none).
        infinity: log10 of the position drawn for ε = ∞, past ``hi``.
        cut: log10 of the axis break between the finite values and ∞.
        ticks: the finite ε values labelled on the axis.
    """

    lo: float
    hi: float
    infinity: float
    cut: float
    ticks: tuple[float, ...]

    @classmethod
    def of(cls, values) -> EpsilonScale:
        finite = [float(v) for v in values if v is not None and np.isfinite(v) and v > 0]
        lo, hi = (math.log10(min(finite)), math.log10(max(finite))) if finite else (0.0, 0.0)
        distinct = sorted({float(f"{v:.3g}") for v in finite})
        if len(distinct) > 8:  # too many to label: decades instead
            distinct = [10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1)]
        gap = max(0.45, 0.25 * (hi - lo))
        return cls(lo, hi, hi + gap, hi + gap / 2, tuple(distinct))

    def position(self, eps: float) -> float | None:
        """The value to plot for ``eps`` (raw units on a log axis); None for NaN."""
        if eps is None or math.isnan(eps):
            return None
        return 10.0 ** self.infinity if math.isinf(eps) else float(eps)

    def log_position(self, eps: float) -> float | None:
        """log10 of :meth:`position`, for axes drawn in log units (scatter matrix, parallel)."""
        pos = self.position(eps)
        return None if pos is None else math.log10(pos)

    def axis(self, *, log_units: bool = False) -> dict:
        """Axis settings: log type (or linear in log10 units), ticks at the ε values and ∞."""
        to = (lambda v: math.log10(v)) if log_units else (lambda v: v)
        tickvals = [to(v) for v in self.ticks] + [to(10.0 ** self.infinity)]
        ticktext = [f"{v:g}" for v in self.ticks] + [NO_DP]
        rng = [self.lo - 0.25, self.infinity + 0.3]
        return dict(type="linear" if log_units else "log", tickvals=tickvals, ticktext=ticktext,
                    range=rng)

    def add_break(self, fig: go.Figure, *, xref: str = "x", yref: str = "y domain") -> None:
        """A dashed vertical line and a "≈" mark where the finite ε end and ∞ begins."""
        x = 10.0 ** self.cut
        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, xref=xref, yref=yref,
                      line=dict(color="#999", width=1.5, dash="dash"))
        fig.add_annotation(x=math.log10(x), y=0, xref=xref, yref=yref, text="≈",
                           showarrow=False, font=dict(size=20, color="#666"), yshift=-2,
                           bgcolor="white")


def _positions(summary: pd.DataFrame, key: str, scale: EpsilonScale) -> list:
    if key == EPSILON:
        return [scale.position(v) for v in summary[key]]
    return _list(summary[key])


def _mean_sd(row: pd.Series, key: str) -> str:
    m = metric(key)
    if key == EPSILON:
        return f"{m.short} = {format_epsilon(row[key])}"
    if math.isnan(row[key]):
        return f"{m.short}: not measured"
    sd = row[sd_column(key)]
    spread = f" ± {sd:.3g}" if not math.isnan(sd) else ""
    return f"{m.short} = {row[key]:.3g}{spread} (n={row[count_column(key)]})"


def hover_text(row: pd.Series, keys: Sequence[str]) -> str:
    """A group's hover text: its label, the metrics ``keys`` (mean ± sd), seeds and run ids."""
    lines = [f"<b>{row['label']}</b> · {row['dataset']}"]
    lines += [_mean_sd(row, key) for key in dict.fromkeys(keys)]
    lines.append(f"{row['n']} seed(s): {', '.join(map(str, row['seeds']))}")
    lines.append("runs: " + ", ".join(row["run_ids"]))
    return "<br>".join(lines)


# ----------------------------------------------------------------------------- Pareto view
def pareto_figure(summary: pd.DataFrame, *, x: str = DEFAULT_X, y: str = DEFAULT_Y,
                  colour: str = DEFAULT_COLOUR) -> go.Figure:
    """The Pareto view: ``y`` against ``x``, one point per group (mean ± sd over seeds).

    Symbol = model, colour = ``colour`` (grey where a group lacks it), a ring around each
    Pareto-optimal group (:func:`genlab.tradeoffs.pareto_of` over x and y with their
    directions) and a dashed staircase along the front. Groups lacking x or y are left out, and
    the subtitle says how many.
    """
    metric(x), metric(y), metric(colour)
    shown = summary[summary[[x, y]].notna().all(axis=1)].reset_index(drop=True)
    scale = EpsilonScale.of(summary[EPSILON])
    styles = model_styles(shown["model"])
    fig = go.Figure()
    keys = (x, y, colour)
    values = shown[colour]
    cmin, cmax = (values.min(), values.max()) if values.notna().any() else (0.0, 1.0)
    # compressed and fused groups (genlab compress / fuse) get their model's symbol with a dot
    derived = shown["derived"] if "derived" in shown else pd.Series("", index=shown.index)
    for model, (_, model_symbol) in styles.items():
        for made_by in sorted(set(derived[shown["model"] == model])):
            rows = shown[(shown["model"] == model) & (derived == made_by)]
            name = f"{model} {made_by}" if made_by else model
            symbol = f"{model_symbol}-dot" if made_by else model_symbol
            for has_colour in (True, False):
                part = rows[rows[colour].notna() == has_colour]
                if not len(part):
                    continue
                marker = dict(symbol=symbol, size=14, line=dict(color="#222", width=1))
                if has_colour:
                    marker.update(color=_list(part[colour]), coloraxis="coloraxis")
                else:
                    marker.update(color="#bbbbbb")
                fig.add_trace(go.Scatter(
                    x=_positions(part, x, scale), y=_positions(part, y, scale), mode="markers",
                    name=name if has_colour else f"{name} (no {metric(colour).short})",
                    legendgroup=name, marker=marker, customdata=part["group"].tolist(),
                    text=[hover_text(r, keys) for _, r in part.iterrows()],
                    hovertemplate="%{text}<extra></extra>",
                    error_x=_error_bars(part, x), error_y=_error_bars(part, y)))
    optimal = shown[pareto_of(shown, [x, y])] if len(shown) else shown
    if len(optimal):
        order = _front_order(optimal, x)
        fig.add_trace(go.Scatter(
            x=_positions(order, x, scale), y=_positions(order, y, scale), mode="lines",
            line=dict(color=FRONT_COLOUR, width=2, dash="dash", shape="vh"),
            name="Pareto front", hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=_positions(order, x, scale), y=_positions(order, y, scale), mode="markers",
            name="Pareto-optimal", customdata=order["group"].tolist(),
            marker=dict(symbol="circle-open", size=28, color=FRONT_COLOUR,
                        line=dict(color=FRONT_COLOUR, width=3)),
            text=[hover_text(r, keys) for _, r in order.iterrows()],
            hovertemplate="Pareto-optimal<br>%{text}<extra></extra>"))
    left_out = len(summary) - len(shown)
    note = f"; {left_out} group(s) lack {metric(x).short} or {metric(y).short}" if left_out else ""
    title = (f"{metric(y).short} against {metric(x).short}<br><sup>{len(shown)} groups, "
             f"mean ± sd over seeds; ringed: Pareto-optimal (no group is better on both)"
             f"{note}</sup>")
    _layout(fig, title, 600, legend=dict(orientation="h", y=-0.18, x=0, yanchor="top"),
            margin=dict(l=80, r=30, t=80, b=40),
            coloraxis=dict(colorscale="Viridis", cmin=cmin, cmax=cmax,
                           colorbar=dict(title=dict(text=metric(colour).label, side="right"),
                                         thickness=14)))
    for axis_name, key in (("xaxis", x), ("yaxis", y)):
        settings = dict(title=dict(text=metric(key).label))
        if key == EPSILON:
            settings.update(scale.axis())
        fig.update_layout({axis_name: settings})
    if x == EPSILON:
        scale.add_break(fig)
    if y == EPSILON:
        fig.add_hline(y=10.0 ** scale.cut, line=dict(color="#999", width=1.5, dash="dash"))
    return fig


def _error_bars(part: pd.DataFrame, key: str, colour: str = "#555") -> dict:
    sd = _list(part[sd_column(key)])
    return dict(type="data", array=sd, visible=any(v is not None for v in sd), thickness=1.5,
                width=4, color=colour)


def _front_order(optimal: pd.DataFrame, x: str) -> pd.DataFrame:
    """The optimal groups from worst to best on x, so a "vh" staircase bounds what they
    dominate."""
    better_x = optimal[x] if metric(x).direction == "higher" else -optimal[x]
    return optimal.assign(_key=better_x.to_numpy()).sort_values("_key").drop(columns="_key")


# ----------------------------------------------------------------------------- three axes
def _three_axes_rows(summary: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, str]:
    full = summary[summary[list(keys)].notna().all(axis=1)].reset_index(drop=True)
    left_out = len(summary) - len(full)
    note = f"; {left_out} group(s) lacking a metric left out" if left_out else ""
    return full, note


def scatter_matrix_figure(summary: pd.DataFrame, keys: Sequence[str] | None = None) -> go.Figure:
    """Every pair of ``keys`` (by default :func:`genlab.tradeoffs.matrix_keys`: one metric per
    axis, efficiency included when every group has it, plus ε), one colour per model.

    ε is drawn in log10 units, ∞ at its own labelled position past the largest finite ε."""
    keys = matrix_keys(summary) if keys is None else tuple(keys)
    rows, note = _three_axes_rows(summary, keys)
    scale = EpsilonScale.of(summary[EPSILON])
    fig = go.Figure()
    for model, (colour, symbol) in model_styles(rows["model"]).items():
        part = rows[rows["model"] == model]
        dims = [dict(label=_title(k), values=[scale.log_position(v) for v in part[k]]
                     if k == EPSILON else _list(part[k])) for k in keys]
        fig.add_trace(go.Splom(
            dimensions=dims, name=model, showupperhalf=False, diagonal=dict(visible=False),
            marker=dict(color=colour, symbol=symbol, size=10, line=dict(color="white", width=1)),
            text=[hover_text(r, keys) for _, r in part.iterrows()],
            hovertemplate="%{text}<extra></extra>"))
    title = (f"{axes_title(keys)} pairwise<br><sup>{len(rows)} groups, means over seeds; ↑/↓: "
             f"higher/lower is better; ε on a log scale, no DP at the top/right{note}</sup>")
    _layout(fig, title, 720, legend=dict(title="model"), dragmode="select",
            hovermode="closest")
    for i, key in enumerate(keys, start=1):
        axis = {"title": dict(text=_title(key))}
        if key == EPSILON:
            axis.update(scale.axis(log_units=True))
        suffix = "" if i == 1 else str(i)
        fig.update_layout({f"xaxis{suffix}": axis, f"yaxis{suffix}": axis})
    return fig


def parallel_figure(summary: pd.DataFrame, keys: Sequence[str] | None = None) -> go.Figure:
    """Parallel coordinates: one line per group through the model and ``keys`` (by default
    :func:`genlab.tradeoffs.matrix_keys`), coloured by model. Each metric's axis is turned so
    that up is better (↑), ε in log10 units with ∞ at the bottom. Plotly's parallel coordinates
    show no hover text: the runs table lists the ids."""
    keys = matrix_keys(summary) if keys is None else tuple(keys)
    rows, note = _three_axes_rows(summary, keys)
    scale = EpsilonScale.of(summary[EPSILON])
    styles = model_styles(rows["model"])
    models = list(styles)
    codes = [models.index(m) for m in rows["model"]]
    dims = [dict(label="model", values=codes, tickvals=list(range(len(models))),
                 ticktext=models, range=[-0.5, max(len(models) - 0.5, 0.5)])]
    for key in keys:
        if key == EPSILON:
            values = [scale.log_position(v) for v in rows[key]]
            axis = scale.axis(log_units=True)
            dims.append(dict(label=_title(key), values=values, tickvals=axis["tickvals"],
                             tickformat=".3g",
                             ticktext=axis["ticktext"], range=axis["range"][::-1]))
            continue
        values = _list(rows[key])
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        pad = 0.05 * (hi - lo) or 0.05
        rng = [lo - pad, hi + pad]
        dims.append(dict(label=_title(key), values=values, tickformat=".3g",
                         range=rng if metric(key).direction == "higher" else rng[::-1]))
    n = max(len(models), 1)
    scale_colours = [[i / max(n - 1, 1), styles[m][0]] for i, m in enumerate(models)] or \
        [[0, MODEL_COLOURS[0]], [1, MODEL_COLOURS[0]]]
    if len(scale_colours) == 1:
        scale_colours = [[0, scale_colours[0][1]], [1, scale_colours[0][1]]]
    fig = go.Figure(go.Parcoords(
        dimensions=dims, labelangle=0, labelside="top",
        line=dict(color=codes, colorscale=scale_colours, cmin=0, cmax=max(n - 1, 1),
                  showscale=False)))
    title = (f"{axes_title(keys)} in parallel<br><sup>one line per group ({len(rows)}), "
             f"means over seeds; every axis is turned so that up is better{note}</sup>")
    return _layout(fig, title, 520, margin=dict(l=80, r=80, t=130, b=40))


# ----------------------------------------------------------------------------- against ε
def epsilon_curves_figure(summary: pd.DataFrame,
                          keys: Sequence[str] = CURVE_KEYS) -> go.Figure:
    """Each metric of ``keys`` against ε, one line per model setup (mean ± sd over seeds).

    A line joins the groups of one model setup (:func:`genlab.tradeoffs.variant_key`) at every
    finite ε; its run without DP stands alone past the axis break. Attack AUC gets its 0.5
    (guessing) line."""
    for key in keys:
        metric(key)
    scale = EpsilonScale.of(summary[EPSILON])
    styles = model_styles(summary["model"])
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[_title(k) for k in keys],
                        horizontal_spacing=0.08)
    variants = summary.groupby("variant", sort=False)
    per_model: dict[str, int] = {}
    for _, part in variants:
        model = part["model"].iloc[0]
        per_model[model] = per_model.get(model, 0) + 1
    seen: dict[str, int] = {}
    for variant, part in variants:
        model = part["model"].iloc[0]
        seen[model] = seen.get(model, 0) + 1
        name = model if per_model[model] == 1 else f"{model} [{variant[:6]}]"
        colour, symbol = styles[model]
        dash = ("solid", "dot", "dash", "dashdot")[(seen[model] - 1) % 4]
        part = part.sort_values("epsilon")
        for col, key in enumerate(keys, start=1):
            rows = part[part[key].notna()]
            for finite in (True, False):
                seg = rows[np.isfinite(rows["epsilon"]) == finite]
                if not len(seg):
                    continue
                fig.add_trace(go.Scatter(
                    x=[scale.position(v) for v in seg["epsilon"]], y=_list(seg[key]),
                    mode="lines+markers" if finite else "markers", name=name,
                    legendgroup=name, showlegend=col == 1 and finite,
                    line=dict(color=colour, width=2.5, dash=dash),
                    marker=dict(color=colour, symbol=symbol, size=10),
                    error_y=_error_bars(seg, key, colour), customdata=seg["group"].tolist(),
                    text=[hover_text(r, (EPSILON, key)) for _, r in seg.iterrows()],
                    hovertemplate="%{text}<extra></extra>"), row=1, col=col)
    for col, key in enumerate(keys, start=1):
        xref = "x" if col == 1 else f"x{col}"
        fig.update_xaxes(title_text="ε (log scale)", **scale.axis(), row=1, col=col)
        scale.add_break(fig, xref=xref, yref=f"{'y' if col == 1 else f'y{col}'} domain")
        if key == "privacy.mia_auc":
            fig.add_hline(y=0.5, line=dict(color="#888", dash="dot"), row=1, col=col,
                          annotation_text="guessing", annotation_position="bottom left")
    title = ("Each axis against the privacy budget ε<br><sup>one line per model, mean ± sd over "
             "seeds; smaller ε is more private</sup>")
    return _layout(fig, title, 460, legend=dict(title="model", orientation="h", y=-0.25))


def available_keys(summary: pd.DataFrame) -> list[str]:
    """The :data:`AXES` keys with at least one measured value in ``summary``."""
    return [key for key in AXES if key in summary and summary[key].notna().any()]
