"""Explore's pictures: samples, class rows, mixture components, reconstructions, traversals and
interpolations of a finished run.

Every grid is a uint8 array from :func:`genlab.viz.image_grid`, cached with ``st.cache_data`` and
keyed by the genlab home, the run id and the settings. Sampling passes its own seeded
``torch.Generator``, so the same settings always give the same picture and the shared cached model
is never touched. What a model can show comes from its class attributes and methods
(:func:`capabilities`), never from its name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from genlab.errors import ConfigError
from genlab.interpret.latent import dim_labels, interpolate, latent_levels, traverse
from genlab.models import LatentModel
from genlab.models.base import ProgressFn
from genlab.viz import image_grid

from .core import get_store, home_key, load_model, model_at
from .labels import caption_cells, label_rows

TARGET_PX = 64  # small images are scaled up (nearest neighbour) to about this many pixels
# Light grey gutters between images: white ones merge with white strokes that touch an image's
# edge (binary PixelCNN samples above all); darker ones merge with blurry mid-grey samples.
GUTTER = 0.8
COMPONENTS_PER_ROW = 10


def has_encoder(model) -> bool:
    """Whether a latent model maps images to codes (it overrides :meth:`LatentModel.encode`)."""
    return bool(model.has_latent) and type(model).encode is not LatentModel.encode


def has_components(model) -> bool:
    """Whether the model exposes readable prototypes, ``components() -> (means, weights)``."""
    return callable(getattr(model, "components", None))


def capabilities(run_id: str) -> dict[str, Any]:
    """What the run's model can show: a latent (its size and its ``levels``), an encoder,
    reconstructions, class-conditional samples (and the number of classes), mixture components
    (and how many).

    ``levels`` holds one dict per latent level, top first (one for most models, two for the
    HVAE): ``key``, ``title``, ``description``, ``prefix``, ``dims`` (the absolute latent dims),
    ``labels`` (one per dim, e.g. ``z3`` or ``z1_2``) and ``shown_first`` (the dims traversed
    before the user picks any); empty without a latent.
    """
    model, _, _ = load_model(run_id)
    conditional = bool(model.conditional)
    levels = [{"key": lv.key, "title": lv.title, "description": lv.description, "prefix": lv.prefix,
               "dims": list(lv.dims), "labels": [lv.label(d) for d in lv.dims],
               "shown_first": lv.shown_first}
              for lv in latent_levels(model)]
    return {"has_latent": bool(model.has_latent),
            "latent_dim": int(getattr(model, "latent_dim", 0) or 0),
            "levels": levels,
            "has_encoder": has_encoder(model),
            "can_reconstruct": callable(getattr(model, "reconstruct", None)),
            "conditional": conditional,
            "num_classes": int(model.num_classes) if conditional else 0,
            "components": len(model.components()[1]) if has_components(model) else 0}


def grid_scale(shape: tuple[int, ...]) -> int:
    """Nearest-neighbour factor that shows an image about TARGET_PX pixels across."""
    return max(1, math.ceil(TARGET_PX / max(shape[-2:])))


def _cell(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of one grid cell: one image plus its 1-pixel padding, scaled."""
    return (shape[-2] + 1) * grid_scale(shape), (shape[-1] + 1) * grid_scale(shape)


def _tile(images: torch.Tensor, shape: tuple[int, ...], nrow: int | None = None) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one uint8 grid, scaled up, with grey gutters; the empty
    cells after the last image (when N is not a multiple of ``nrow``) are left white."""
    n = len(images)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    scale = grid_scale(shape)
    grid = image_grid(images, nrow=nrow, scale=scale, pad_value=GUTTER).copy()
    rows, last = math.ceil(n / nrow), n - (math.ceil(n / nrow) - 1) * nrow
    if last < nrow:
        h, w = shape[-2:]
        grid[((rows - 1) * (h + 1) + 1) * scale:, (last * (w + 1) + 1) * scale:] = 255
    return grid


def _test_images(data, n: int, seed: int) -> torch.Tensor:
    """``n`` test images picked by ``seed`` (a fixed pick for a given seed)."""
    pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(seed))[:n]
    return data.test.x[pick]


def _run_key(run_id: str) -> tuple[str, str]:
    return home_key(), get_store().get(run_id).id


# ----------------------------------------------------------------------------- samples
@st.cache_data(show_spinner="Drawing samples…", max_entries=64)
def _sample_grid(home: str, run_id: str, n: int, seed: int,
                 _progress: ProgressFn | None = None) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    images = model.sample(n, generator=torch.Generator().manual_seed(seed), progress=_progress)
    return _tile(images, data.shape)


def sample_grid(run_id: str, n: int, seed: int, *,
                progress: ProgressFn | None = None) -> np.ndarray:
    """``n`` samples drawn with ``seed``, tiled into one uint8 image.

    Args:
        progress: called as ``progress(done, total)`` while a slow sampler (PixelCNN) works.
            It is not part of the cache key, so it only runs on a cache miss.
    """
    return _sample_grid(*_run_key(run_id), int(n), int(seed), progress)


@st.cache_data(show_spinner="Drawing samples for every class…", max_entries=32)
def _class_grid(home: str, run_id: str, per_class: int, seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    if not model.conditional:
        raise ConfigError(f"model {model.name!r} is not class-conditional")
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    images, _ = model.sample_with_labels(len(labels), labels=labels,
                                         generator=torch.Generator().manual_seed(seed))
    grid = _tile(images.cpu(), data.shape, nrow=per_class)
    return label_rows(grid, class_labels(model.num_classes), row_height=_cell(data.shape)[0])


def class_labels(num_classes: int) -> list[str]:
    """The row labels of :func:`class_grid`, in row order."""
    return [f"class {k}" for k in range(num_classes)]


def class_grid(run_id: str, per_class: int, seed: int) -> np.ndarray:
    """Class-conditional samples: row k holds ``per_class`` images generated for class k,
    labelled on the left (see :func:`class_labels`)."""
    return _class_grid(*_run_key(run_id), int(per_class), int(seed))


# ----------------------------------------------------------------------------- mixture components
@st.cache_data(show_spinner=False, max_entries=32)
def _component_grid(home: str, run_id: str, top: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    if not has_components(model):
        raise ConfigError(f"model {model.name!r} has no mixture components")
    means, weights = model.components()
    means, weights = means[:top].cpu(), weights[:top].tolist()
    per_row = min(COMPONENTS_PER_ROW, len(weights))
    grid = _tile(means, data.shape, nrow=per_row)
    return caption_cells(grid, [f"{w:.1%}" for w in weights], per_row=per_row,
                         cell=_cell(data.shape), offset=grid_scale(data.shape))


def component_grid(run_id: str, top: int) -> np.ndarray:
    """The ``top`` heaviest mixture components' means, heaviest first, each captioned with its
    weight; ten to a row."""
    return _component_grid(*_run_key(run_id), int(top))


def component_weights(run_id: str) -> list[float]:
    """Every mixture weight, heaviest first (they sum to 1)."""
    model, _, _ = load_model(run_id)
    if not has_components(model):
        raise ConfigError(f"model {model.name!r} has no mixture components")
    return model.components()[1].cpu().tolist()


def weights_figure(weights: list[float]) -> go.Figure:
    """Bar chart of mixture weights by rank: how many components the model really uses."""
    ranks = list(range(1, len(weights) + 1))
    fig = go.Figure(go.Bar(x=ranks, y=weights, name="weight"))
    fig.update_layout(xaxis_title="component (heaviest first)", yaxis_title="weight",
                      yaxis_tickformat=".0%", height=260, margin=dict(l=10, r=10, t=10, b=10))
    return fig


# ----------------------------------------------------------------------------- encoder and latent
@st.cache_data(show_spinner=False, max_entries=32)
def _reconstruction_grid(home: str, run_id: str, n: int, seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    if not callable(getattr(model, "reconstruct", None)):
        raise ConfigError(f"model {model.name!r} cannot reconstruct images")
    x = _test_images(data, n, seed)
    with torch.no_grad():
        rec = model.reconstruct(x.to(model.device)).cpu()
    return _tile(torch.cat([x, rec]), data.shape, nrow=len(x))


def reconstruction_grid(run_id: str, n: int, seed: int) -> np.ndarray:
    """Test images (first row) above their reconstructions (second row)."""
    return _reconstruction_grid(*_run_key(run_id), int(n), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _traversal_grid(home: str, run_id: str, dims: tuple[int, ...], lo: float, hi: float,
                    steps: int, seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    base = torch.zeros(model.latent_dim)
    if has_encoder(model):  # start from a real test image's posterior mean
        with torch.no_grad():
            base = model.encode(_test_images(data, 1, seed).to(model.device))[0].cpu()
    values = np.linspace(lo, hi, steps).tolist()
    images = traverse(model, base=base, dims=list(dims), values=values)
    grid = _tile(images, data.shape, nrow=steps)
    return label_rows(grid, dim_labels(model, dims), row_height=_cell(data.shape)[0])


def traversal_grid(run_id: str, dims: list[int], lo: float, hi: float, steps: int,
                   seed: int) -> np.ndarray:
    """Latent traversal: row i sweeps dim ``dims[i]`` from ``lo`` to ``hi`` in ``steps``.

    The other dims stay at the posterior mean of the test image picked by ``seed`` (or at zero
    for a model without an encoder). Each row is labelled on the left with its dim's label in
    its latent level (``z3``; ``z2_0`` for the HVAE's first top dim), so one call can sweep
    dims of any level.
    """
    return _traversal_grid(*_run_key(run_id), tuple(int(d) for d in dims), float(lo), float(hi),
                           int(steps), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _interpolation_grid(home: str, run_id: str, pairs: int, steps: int, spherical: bool,
                        seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    if not model.has_latent:
        raise ConfigError(f"model {model.name!r} has no latent space to interpolate in")
    ends = None
    if has_encoder(model):  # the codes of real test images
        ends = _test_images(data, 2 * pairs, seed)
        with torch.no_grad():
            z = model.encode(ends.to(model.device)).cpu()
    else:  # two draws from the prior per row
        z = model.prior_sample(2 * pairs, generator=torch.Generator().manual_seed(seed)).cpu()
    gap = torch.ones(1, *data.shape)  # a white cell sets the real images apart
    rows = []
    for i in range(pairs):
        row = interpolate(model, z[2 * i], z[2 * i + 1], steps=steps, spherical=spherical).cpu()
        if ends is not None:
            row = torch.cat([ends[2 * i:2 * i + 1], gap, row, gap, ends[2 * i + 1:2 * i + 2]])
        rows.append(row)
    return _tile(torch.cat(rows), data.shape, nrow=len(rows[0]))


def interpolation_grid(run_id: str, pairs: int, steps: int, spherical: bool,
                       seed: int) -> np.ndarray:
    """One row per pair of codes, decoded at ``steps`` points from the first to the second.

    For a model with an encoder, the codes are those of two test images picked by ``seed``, and
    the real images sit at both ends of the row, set off by a white cell; otherwise (the GAN)
    they are two prior draws. ``spherical`` follows the great circle (slerp) instead of the line.
    """
    return _interpolation_grid(*_run_key(run_id), int(pairs), int(steps), bool(spherical),
                               int(seed))
