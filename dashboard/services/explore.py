"""Explore's pictures: sample, reconstruction and traversal grids of a finished run.

Every grid is a uint8 array from :func:`genlab.viz.image_grid`, cached with ``st.cache_data`` and
keyed by the genlab home, the run id and the settings. Sampling passes its own seeded
``torch.Generator``, so the same settings always give the same picture and the shared cached model
is never touched.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import streamlit as st
import torch
from PIL import Image, ImageDraw, ImageFont

from genlab.errors import ConfigError
from genlab.interpret.latent import traverse
from genlab.viz import image_grid

from .core import get_store, home_key, load_model, model_at

TARGET_PX = 64  # small images are scaled up (nearest neighbour) to about this many pixels


def capabilities(run_id: str) -> dict[str, Any]:
    """What the run's model supports: a latent (and its size), reconstructions."""
    model, _, _ = load_model(run_id)
    return {"has_latent": bool(model.has_latent),
            "latent_dim": int(getattr(model, "latent_dim", 0) or 0),
            "can_reconstruct": callable(getattr(model, "reconstruct", None))}


def grid_scale(shape: tuple[int, ...]) -> int:
    """Nearest-neighbour factor that shows an image about TARGET_PX pixels across."""
    return max(1, math.ceil(TARGET_PX / max(shape[-2:])))


def _test_images(data, n: int, seed: int) -> torch.Tensor:
    """``n`` test images picked by ``seed`` (a fixed pick for a given seed)."""
    pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(seed))[:n]
    return data.test.x[pick]


@st.cache_data(show_spinner="Drawing samples…", max_entries=64)
def _sample_grid(home: str, run_id: str, n: int, seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    images = model.sample(n, generator=torch.Generator().manual_seed(seed))
    return image_grid(images, scale=grid_scale(data.shape))


def sample_grid(run_id: str, n: int, seed: int) -> np.ndarray:
    """``n`` samples drawn with ``seed``, tiled into one uint8 image."""
    return _sample_grid(home_key(), get_store().get(run_id).id, int(n), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _reconstruction_grid(home: str, run_id: str, n: int, seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    if not callable(getattr(model, "reconstruct", None)):
        raise ConfigError(f"model {model.name!r} cannot reconstruct images")
    x = _test_images(data, n, seed)
    with torch.no_grad():
        rec = model.reconstruct(x.to(model.device)).cpu()
    return image_grid(torch.cat([x, rec]), nrow=len(x), scale=grid_scale(data.shape))


def reconstruction_grid(run_id: str, n: int, seed: int) -> np.ndarray:
    """Test images (first row) above their reconstructions (second row)."""
    return _reconstruction_grid(home_key(), get_store().get(run_id).id, int(n), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _traversal_grid(home: str, run_id: str, dims: tuple[int, ...], lo: float, hi: float,
                    steps: int, seed: int) -> np.ndarray:
    model, _, data = model_at(home, run_id)
    base = torch.zeros(model.latent_dim)
    if model.has_latent:
        try:  # start from a real test image's posterior mean where there is an encoder
            with torch.no_grad():
                base = model.encode(_test_images(data, 1, seed).to(model.device))[0].cpu()
        except NotImplementedError:
            pass
    values = np.linspace(lo, hi, steps).tolist()
    images = traverse(model, base=base, dims=list(dims), values=values)
    grid = image_grid(images, nrow=steps, scale=grid_scale(data.shape))
    cell = (data.shape[-2] + 1) * grid_scale(data.shape)  # one image plus its padding
    return label_rows(grid, [f"z{d}" for d in dims], row_height=cell)


def traversal_grid(run_id: str, dims: list[int], lo: float, hi: float, steps: int,
                   seed: int) -> np.ndarray:
    """Latent traversal: row i sweeps dim ``dims[i]`` from ``lo`` to ``hi`` in ``steps``.

    The other dims stay at the posterior mean of the test image picked by ``seed`` (or at zero
    for a model without an encoder). Each row is labelled with its dim on the left.
    """
    return _traversal_grid(home_key(), get_store().get(run_id).id, tuple(int(d) for d in dims),
                           float(lo), float(hi), int(steps), int(seed))


def label_rows(grid: np.ndarray, labels: list[str], *, row_height: int) -> np.ndarray:
    """Add a white margin on the left of ``grid`` with one text label per row of images."""
    img = Image.fromarray(grid).convert("L" if grid.ndim == 2 else "RGB")
    size = max(10, min(20, row_height // 3))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    width = 8 + max(int(ImageDraw.Draw(img).textlength(t, font=font)) for t in labels)
    out = Image.new(img.mode, (img.width + width, img.height), "white")
    out.paste(img, (width, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        draw.text((4, i * row_height + (row_height - size) // 2), text, fill="black", font=font)
    return np.asarray(out)
