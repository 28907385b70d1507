"""Attribution pictures as RGB arrays and PNG files (``genlab explain``; handouts and scripts).

Colours are diverging: red where a pixel (or latent dim) raises the target, blue where it lowers
it, and the strength is the share of the image's largest absolute attribution (its 99th
percentile, so one extreme pixel does not wash out the rest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from genlab.interpret.attribution import Explanation

RED = np.array([1.0, 0.1, 0.05])
BLUE = np.array([0.1, 0.35, 1.0])
PANEL = 112  # pixels per side an image is upscaled to (at least)


def normalise(attributions: np.ndarray, *, quantile: float = 0.99) -> np.ndarray:
    """Each map (first axis) scaled to [-1, 1] by its ``quantile`` of |a|, then clipped."""
    a = np.asarray(attributions, dtype=np.float64)
    flat = np.abs(a.reshape(len(a), -1))
    scale = np.quantile(flat, quantile, axis=1) if flat.shape[1] else np.ones(len(a))
    scale = np.where(scale > 0, scale, np.where(flat.max(1, initial=0) > 0, flat.max(1), 1.0))
    return np.clip(a / scale.reshape(-1, *[1] * (a.ndim - 1)), -1.0, 1.0)


def diverging(v: np.ndarray, under: np.ndarray | None = None) -> np.ndarray:
    """Values in [-1, 1] to RGB in [0, 1]: red for positive, blue for negative, blended over
    ``under`` (grey levels of the same shape, dimmed so the colours stand out) or white."""
    v = np.asarray(v, dtype=np.float64)[..., None]
    base = np.ones((*v.shape[:-1], 3)) if under is None else 0.15 + 0.45 * under[..., None]
    colour = np.where(v > 0, RED, BLUE)
    alpha = np.abs(v) ** 0.75  # lift faint attributions a little
    return (1 - alpha) * base + alpha * colour


def overlay(images: torch.Tensor, attributions: torch.Tensor) -> np.ndarray:
    """Attributions over images, both (B, C, H, W): RGB float array (B, H, W, 3) in [0, 1].

    Channels are averaged: one grey image and one map per sample.
    """
    grey = images.detach().float().cpu().numpy().mean(1)
    maps = normalise(attributions.detach().float().cpu().numpy().sum(1))
    return diverging(maps, grey)


def _upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1)


def _latent_panel(values: np.ndarray, size: int) -> np.ndarray:
    """A latent attribution vector as a grid of coloured cells, 8 per row, ``size`` wide."""
    cols = min(8, len(values))
    rows = -(-len(values) // cols)
    cell = max(4, size // cols)
    panel = np.ones((size, size, 3))
    cells = np.ones((rows, cols, 3))
    cells.reshape(-1, 3)[: len(values)] = diverging(values)
    grid = _upscale(cells, cell)[:size, :size]
    panel[: grid.shape[0], : grid.shape[1]] = grid
    return panel


def explanation_grid(expl: Explanation, *, ncol: int = 4, pad: int = 4) -> np.ndarray:
    """One uint8 RGB picture: each sample's image beside its attributions, ``ncol`` pairs a row.

    Pixel-space attributions are drawn over the dimmed image; latent-space ones (a decoder
    target) as a grid of cells, one per latent dim (row-major, 8 a row), beside the decoded
    image with the target region outlined in yellow.
    """
    images = expl.images.detach().float().cpu().numpy()
    n, _, h, w = images.shape
    factor = max(1, -(-PANEL // max(h, w)))
    size = max(h, w) * factor
    pictures = _to_rgb(images.mean(1))
    if expl.space == "pixels":
        right = overlay(expl.images, expl.attributions)
    else:
        maps = normalise(expl.attributions.detach().float().cpu().numpy())
        right = [_latent_panel(m, size) for m in maps]
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    canvas = np.ones((pad + nrow * (size + pad), pad + ncol * (2 * size + 2 * pad), 3))
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (size + pad), pad + c * (2 * size + 2 * pad)
        img = _upscale(pictures[i], factor)
        if expl.region is not None:
            r0, r1, c0, c1 = (v * factor for v in expl.region)
            img = img.copy()
            img[r0:r1, [c0, c1 - 1]] = img[[r0, r1 - 1], c0:c1] = (1.0, 0.85, 0.0)
        canvas[top : top + size, left : left + img.shape[1]] = img
        rhs = right[i] if expl.space != "pixels" else _upscale(right[i], factor)
        canvas[top : top + size, left + size + pad : left + size + pad + rhs.shape[1]] = rhs
    return (canvas * 255 + 0.5).astype(np.uint8)


def save_explanation_png(expl: Explanation, path: str | Path, *, ncol: int = 4) -> Path:
    """Write :func:`explanation_grid` under a one-line caption saying what the colours mean."""
    grid = explanation_grid(expl, ncol=ncol)
    caption = (
        f"{expl.method} on {expl.description}. Red raises the target, blue lowers it "
        "(each map scaled to its own range)."
    )
    caption = caption.replace("–", "-").encode("ascii", "replace").decode()  # bitmap font
    font = ImageFont.load_default()
    height = 18
    width = max(
        grid.shape[1],
        int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(caption, font=font)) + 8,
    )
    out = Image.new("RGB", (width, grid.shape[0] + height), "white")
    out.paste(Image.fromarray(grid), (0, height))
    ImageDraw.Draw(out).text((4, 3), caption, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path
