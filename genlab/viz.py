"""Image grids as uint8 arrays and PNG files, shared by the CLI, the artifacts and the pages."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def image_grid(
    images: torch.Tensor | np.ndarray,
    *,
    nrow: int | None = None,
    pad: int = 1,
    scale: int = 1,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one uint8 array (H', W') or (H', W', 3).

    Args:
        images: the images; values are clipped to [0, 1].
        nrow: images per row (default: about square).
        pad: pixels of ``pad_value`` between images.
        scale: nearest-neighbour upscaling factor, so 8x8 digits stay visible.
    """
    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else images
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    out = (grid * 255 + 0.5).astype(np.uint8)
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
