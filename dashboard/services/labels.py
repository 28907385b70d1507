"""Text drawn onto image grids: row labels on the left, captions under single cells.

The grids come from :func:`genlab.viz.image_grid` (uint8, grey or RGB, white padding). Labels are
drawn with Pillow's default font, sized to the cells, so they stay readable at any image scale.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _as_image(grid: np.ndarray) -> Image.Image:
    return Image.fromarray(grid).convert("L" if grid.ndim == 2 else "RGB")


def label_rows(grid: np.ndarray, labels: list[str], *, row_height: int) -> np.ndarray:
    """Add a white margin on the left of ``grid`` with one text label per row of images."""
    img = _as_image(grid)
    size = max(10, min(20, row_height // 3))
    font = _font(size)
    width = 8 + max(int(ImageDraw.Draw(img).textlength(t, font=font)) for t in labels)
    out = Image.new(img.mode, (img.width + width, img.height), "white")
    out.paste(img, (width, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        draw.text((4, i * row_height + (row_height - size) // 2), text, fill="black", font=font)
    return np.asarray(out)


def caption_cells(grid: np.ndarray, captions: list[str], *, per_row: int,
                  cell: tuple[int, int], offset: int) -> np.ndarray:
    """Insert a white band under each row of ``grid`` with a caption centred under each cell.

    Args:
        grid: a tiled image: a gutter of ``offset`` pixels, then cells that each hold one image
            followed by a gutter of the same width.
        captions: one short text per cell, row-major; cells past the last caption stay bare.
        per_row: cells per row of the grid.
        cell: ``(height, width)`` of one cell, gutter included, in pixels.
        offset: the gutter's width, in pixels.
    """
    img = _as_image(grid)
    cell_h, cell_w = cell
    size = max(10, min(16, cell_w // 5))
    font = _font(size)
    band = size + 8
    block = cell_h + offset  # one row of cells framed by the gutters above and below it
    rows = -(-len(captions) // per_row)
    out = Image.new(img.mode, (img.width, rows * (block + band)), "white")
    draw = ImageDraw.Draw(out)
    for r in range(rows):
        top = r * (block + band)
        out.paste(img.crop((0, r * cell_h, img.width, r * cell_h + block)), (0, top))
        for c, text in enumerate(captions[r * per_row:(r + 1) * per_row]):
            centre = offset + c * cell_w + (cell_w - offset) / 2
            width = draw.textlength(text, font=font)
            draw.text((centre - width / 2, top + block + 3), text, fill="black", font=font)
    return np.asarray(out)
