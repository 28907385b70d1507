"""The Privacy and Train pages' charts: ε against steps or epochs, the attack's ROC on log-log
axes, and the empirical ε lower bound beside the formal ε.

Every function takes plain data (a plan dict, history frames, record privacy blocks keyed by a
run label) and returns a Plotly figure, so the charts are cheap and need no caching. The values
go in as Python lists, so a test can read them back from the chart's JSON.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go

RUN_COLOURS = ("#4C6FFF", "#E4572E", "#17A398", "#9B5DE5")
ATTACK_LINES = {"loss": "solid", "reference": "dash"}
ATTACK_NAMES = {"loss": "LOSS attack", "reference": "reference attack"}
LOW_FPRS = (0.01, 0.001)  # the false-alarm rates an attacker cares about


def _layout(fig: go.Figure, height: int, **axes: Any) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=-0.2), font=dict(size=14), **axes)
    return fig


def plan_figure(plan: dict[str, Any]) -> go.Figure:
    """ε against epochs for one budget plan."""
    curve = plan["curve"]
    fig = go.Figure(go.Scatter(x=[p["epoch"] for p in curve], y=[p["epsilon"] for p in curve],
                               mode="lines+markers", name=f"ε ({plan['accountant']})"))
    return _layout(fig, 260, xaxis_title="epoch", yaxis_title="ε", showlegend=False)


def epsilon_steps_figure(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """ε after each epoch against optimizer steps, one line per DP run."""
    fig = go.Figure()
    for i, (label, history) in enumerate(histories.items()):
        if len(history):
            fig.add_trace(go.Scatter(x=history["step"].tolist(), y=history["epsilon"].tolist(),
                                     mode="lines+markers", name=label,
                                     line=dict(color=RUN_COLOURS[i % len(RUN_COLOURS)])))
    return _layout(fig, 320, xaxis_title="optimizer steps", yaxis_title="ε spent so far",
                   yaxis_rangemode="tozero")


def roc_floor(blocks: dict[str, dict]) -> float:
    """Where FPR = 0 is drawn on the log axes: a decade below 1 / (the most non-members)."""
    n = max((b.get("audit", {}).get("n_nonmembers") or 100) for b in blocks.values())
    return 10.0 ** (math.floor(math.log10(1 / n)) - 1)


def roc_figure(blocks: dict[str, dict]) -> go.Figure:
    """Each run's attacks' ROC curves on log-log axes, the chance diagonal, and TPR marked at
    1% and 0.1% FPR. Zero rates are drawn at :func:`roc_floor`. The curves are staircases: a
    threshold reaches a corner, and between corners only the TPR of the corner to the left."""
    floor = roc_floor(blocks)
    fig = go.Figure(go.Scatter(x=[floor, 1.0], y=[floor, 1.0], mode="lines",
                               name="chance (guessing)", line=dict(color="grey", dash="dot")))
    for i, (label, block) in enumerate(blocks.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for attack, result in block.get("attacks", {}).items():
            name = f"{label} · {ATTACK_NAMES.get(attack, attack)}"
            roc = result["roc"]
            fig.add_trace(go.Scatter(
                x=[max(v, floor) for v in roc["fpr"]], y=[max(v, floor) for v in roc["tpr"]],
                mode="lines", name=f"{name} (AUC {result['auc']:.3f})", line_shape="hv",
                line=dict(color=colour, dash=ATTACK_LINES.get(attack, "dashdot"), width=2.5)))
            marks = [(f, result.get(key)) for f, key in
                     zip(LOW_FPRS, ("tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"), strict=True)]
            marks = [(f, t) for f, t in marks if t is not None]
            fig.add_trace(go.Scatter(
                x=[f for f, _ in marks], y=[max(t, floor) for _, t in marks], mode="markers",
                name=f"{name}: TPR at low FPR", showlegend=False,
                marker=dict(color=colour, size=11, symbol="diamond",
                            line=dict(color="white", width=1)),
                hovertemplate="TPR %{customdata:.1%} at FPR %{x:.1%}<extra></extra>",
                customdata=[t for _, t in marks]))
    for fpr in LOW_FPRS:
        fig.add_vline(x=fpr, line=dict(color="#888", width=1, dash="dash"),
                      annotation_text=f"{fpr:.1%} FPR", annotation_position="top left")
    axis = dict(type="log", range=[math.log10(floor), 0], exponentformat="power", dtick=1)
    return _layout(fig, 480, xaxis=dict(title="false positive rate (non-members flagged)",
                                        **axis),
                   yaxis=dict(title="true positive rate (members caught)", **axis))


def epsilon_pair(block: dict[str, Any]) -> dict[str, Any]:
    """The formal ε (None: no DP) beside the audit's empirical bound and its interval, from the
    attack that proved the largest bound."""
    attacks = block.get("attacks", {})
    name = max(attacks, key=lambda a: attacks[a]["epsilon"]["epsilon_lower_bound"],
               default=None)
    estimate = attacks[name]["epsilon"] if name else {}
    return {"formal": block.get("epsilon"), "accountant": block.get("accountant"),
            "lower": block.get("epsilon_lower_bound"), "point": estimate.get("epsilon_point"),
            "upper": estimate.get("epsilon_upper"), "attack": name}


def epsilon_pair_figure(blocks: dict[str, dict]) -> go.Figure:
    """Per run, a bar pair: the accountant's ε (∞, hatched, for a run without DP) and the
    empirical lower bound with a whisker up to the top of its interval."""
    pairs = {label: epsilon_pair(block) for label, block in blocks.items()}
    finite = [v for p in pairs.values() for v in (p["formal"], p["point"], p["upper"])
              if v is not None and math.isfinite(v)]
    top = 1.25 * max([1.0, *finite])
    labels = list(pairs)
    formal = [pairs[x]["formal"] for x in labels]
    fig = go.Figure(go.Bar(
        x=labels, y=[top if f is None else f for f in formal], name="formal ε (accountant)",
        text=["∞ (no DP)" if f is None else f"ε = {f:.2f}" for f in formal],
        marker=dict(color="#4C6FFF", pattern=dict(shape=["/" if f is None else "" for f in formal],
                                                  fillmode="overlay", fgcolor="white")),
        textposition="outside", cliponaxis=False))
    lower = [pairs[x]["lower"] or 0.0 for x in labels]
    upper = [top if pairs[x]["upper"] is None else pairs[x]["upper"] for x in labels]
    fig.add_trace(go.Bar(
        x=labels, y=lower, name="empirical ε lower bound (attack)", marker=dict(color="#E4572E"),
        text=[f"≥ {v:.2f}" for v in lower], textposition="outside", cliponaxis=False,
        error_y=dict(type="data", symmetric=False, array=[u - v for u, v in zip(upper, lower)],
                     arrayminus=[0.0] * len(lower), color="#333", thickness=2, width=10),
        customdata=[[pairs[x]["point"], pairs[x]["upper"]] for x in labels],
        hovertemplate="lower bound %{y:.3f}<br>point %{customdata[0]:.3f}"
                      "<br>interval top %{customdata[1]:.3f}<extra></extra>"))
    return _layout(fig, 380, barmode="group", yaxis=dict(title="ε", range=[0, 1.15 * top]),
                   bargap=0.35)
