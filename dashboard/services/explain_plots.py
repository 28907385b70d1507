"""The Explain page's charts: attributions as Plotly heatmaps over the images, and the latent map.

Each attribution map is scaled to its own 99th percentile of |a| (:func:`genlab.interpret.overlay
.normalise`), so one shared colour bar from -1 to 1 reads for every panel. The colour scale is
diverging and centred at 0: blue where a pixel lowers the target, red where it raises it, and
transparent near 0, so the grey image shows through wherever the attribution is weak. Hovering a
pixel shows its raw attribution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from genlab.interpret import LatentMap
from genlab.interpret.overlay import normalise
from genlab.viz import image_grid

BLUE, RED = "33,102,172", "178,24,43"
# Hue fixed on each side, opacity rising with |value|: faint attributions let the image through.
OVERLAY_SCALE = [[0.0, f"rgba({BLUE},1)"], [0.25, f"rgba({BLUE},0.7)"],
                 [0.5, f"rgba({BLUE},0)"], [0.5, f"rgba({RED},0)"],
                 [0.75, f"rgba({RED},0.7)"], [1.0, f"rgba({RED},1)"]]
GREY_SCALE = [[0.0, "rgb(25,25,25)"], [1.0, "rgb(175,175,175)"]]  # dimmed, so colours stand out
PANEL_PX = 150  # height of one row of panels (a title above a square panel)
LATENT_COLS = 8  # latent attributions are drawn as cells, this many a row
LATENT_WIDTH = 1.6  # width of the cells' panel, relative to the decoded image beside it


def _colour_bar(title: str) -> dict[str, Any]:
    return dict(colorscale=OVERLAY_SCALE, cmin=-1, cmax=1, cmid=0,
                colorbar=dict(title=dict(text=title, side="right"), thickness=12, len=0.9,
                              tickvals=[-1, 0, 1], ticktext=["lowers", "0", "raises"]))


def _image_trace(grey: np.ndarray) -> go.Heatmap:
    return go.Heatmap(z=grey, colorscale=GREY_SCALE, zmin=0, zmax=1, showscale=False,
                      hoverinfo="skip", name="image")


def _pixel_panels(fig: go.Figure, expl: dict[str, Any], ncol: int) -> None:
    raw, scaled = expl["maps"], normalise(expl["maps"])
    for i, grey in enumerate(expl["images"]):
        row, col = divmod(i, ncol)
        fig.add_trace(_image_trace(grey), row=row + 1, col=col + 1)
        fig.add_trace(go.Heatmap(z=scaled[i], customdata=raw[i], coloraxis="coloraxis",
                                 name="attribution",
                                 hovertemplate="row %{y}, column %{x}<br>attribution "
                                               "%{customdata:.3g}<extra></extra>"),
                      row=row + 1, col=col + 1)


def _latent_panels(fig: go.Figure, expl: dict[str, Any], ncol: int) -> None:
    """Decoded image (region outlined) beside its latent attributions as labelled cells."""
    raw, scaled = expl["maps"], normalise(expl["maps"])
    dims = raw.shape[1]
    rows, cols = math.ceil(dims / LATENT_COLS), min(LATENT_COLS, dims)
    names = np.full(rows * cols, "", dtype=object)
    names[:dims] = [f"z{d}" for d in range(dims)]
    for i, grey in enumerate(expl["images"]):
        row, col = divmod(i, ncol)
        fig.add_trace(_image_trace(grey), row=row + 1, col=2 * col + 1)
        if expl["region"] is not None:
            r0, r1, c0, c1 = expl["region"]
            fig.add_shape(type="rect", x0=c0 - 0.5, x1=c1 - 0.5, y0=r0 - 0.5, y1=r1 - 0.5,
                          line=dict(color="gold", width=2), row=row + 1, col=2 * col + 1)
        cells = np.full(rows * cols, np.nan)
        cells[:dims] = scaled[i]
        values = np.full(rows * cols, np.nan)
        values[:dims] = raw[i]
        fig.add_trace(go.Heatmap(z=cells.reshape(rows, cols), coloraxis="coloraxis",
                                 text=names.reshape(rows, cols), texttemplate="%{text}",
                                 customdata=values.reshape(rows, cols), name="attribution",
                                 hovertemplate="%{text}: %{customdata:.3g}<extra></extra>",
                                 xgap=2, ygap=2),
                      row=row + 1, col=2 * col + 2)


def attribution_figure(expl: dict[str, Any], *, ncol: int = 4, panel_px: int = PANEL_PX,
                       titles: list[str] | None = None) -> go.Figure:
    """One small panel per image: the attributions over the grey image (pixel targets), or the
    decoded image beside a cell per latent dim (decoder targets).

    Args:
        expl: from :func:`services.explanation`.
        ncol: images per row.
        panel_px: height of one row of panels, in pixels; about the width of one panel (the
            chart's width over ``ncol``, twice that for decoder targets) keeps them square.
        titles: one per image; by default the target's value f(x).
    """
    n = len(expl["images"])
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    pixels = expl["space"] == "pixels"
    titles = titles or [f"f = {v:.3g}" for v in expl["target_values"]]
    grid_titles = []
    for r in range(nrow):
        for c in range(ncol):
            i = r * ncol + c
            grid_titles += [titles[i] if i < n else ""] + ([] if pixels else [""])
    cols = ncol if pixels else 2 * ncol
    fig = make_subplots(rows=nrow, cols=cols, subplot_titles=grid_titles,
                        column_widths=None if pixels else [1, LATENT_WIDTH] * ncol,
                        horizontal_spacing=0.012 if pixels else 0.02, vertical_spacing=0.3 / nrow)
    (_pixel_panels if pixels else _latent_panels)(fig, expl, ncol)
    bare = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False, showline=False,
                constrain="domain")
    fig.update_xaxes(**bare)
    fig.update_yaxes(**bare, autorange="reversed")
    for r in range(1, nrow + 1):
        for c in range(1, cols + 1, 1 if pixels else 2):  # square pixels; latent cells stretch
            axis = fig.get_subplot(r, c).yaxis
            axis.scaleanchor = axis.anchor
    fig.update_annotations(font=dict(size=13, color="#31333f"))
    fig.update_layout(coloraxis=_colour_bar("attribution"), height=45 + nrow * panel_px,
                      margin=dict(l=5, r=5, t=30, b=5), plot_bgcolor="white")
    return fig


def latent_map_figure(lmap: LatentMap) -> go.Figure:
    """The decoded grid (latent_dim 2) as one grey heatmap with z values on the axes, or the PCA
    scatter of encoded test images, one colour per class."""
    fig = go.Figure()
    if lmap.kind == "grid":
        images = lmap.images
        tiles = image_grid(images, nrow=lmap.grid, pad=1, pad_value=0.8).astype(float) / 255
        if tiles.ndim == 3:
            tiles = tiles.mean(2)
        h, w = images.shape[-2:]
        axis = np.unique(lmap.points[:, 0])
        ticks = [1 + i * (h + 1) + (h - 1) / 2 for i in range(lmap.grid)]
        fig.add_trace(go.Heatmap(z=tiles, colorscale="gray", zmin=0, zmax=1, showscale=False,
                                 hoverinfo="skip"))
        labels = [f"{v:.1f}" for v in axis]
        fig.update_yaxes(tickvals=ticks, ticktext=labels, autorange="reversed", title="z0",
                         scaleanchor="x", constrain="domain")
        fig.update_xaxes(tickvals=[1 + i * (w + 1) + (w - 1) / 2 for i in range(lmap.grid)],
                         ticktext=labels, title="z1", constrain="domain")
        fig.update_layout(height=560)
    else:
        for label in np.unique(lmap.labels):
            pick = lmap.labels == label
            fig.add_trace(go.Scatter(x=lmap.points[pick, 0], y=lmap.points[pick, 1],
                                     mode="markers", name=f"class {label}",
                                     marker=dict(size=6, opacity=0.75)))
        share = lmap.explained_variance
        fig.update_xaxes(title=f"PC1 ({share[0]:.0%} of the variance)")
        fig.update_yaxes(title=f"PC2 ({share[1]:.0%} of the variance)")
        fig.update_layout(height=460, legend=dict(title="label"))
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="white")
    return fig
