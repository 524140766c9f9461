"""Image grids: a mosaic of a set's images, one row per class, as an RGB array.

The grids are what the report and the UI's previews show of a set (real, synthetic, kept,
rejected, distilled, the contamination pairs); `ops/report/plots.png_bytes` encodes them.
"""

from __future__ import annotations

import numpy as np

GRID_BACKGROUND = 96  # grey for empty cells and separators


def image_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], *,
               per_class: int = 8, scale: int | None = None) -> np.ndarray:
    """An RGB mosaic, one row per class with its first `per_class` images (grey when missing).

    Small images are upscaled by nearest neighbour (a cell is at least ~48 px) so they can be
    seen; cells are separated by 2 px.
    """
    if images.ndim != 4:
        raise ValueError(f"expected N×H×W×C images, got shape {images.shape}")
    height, width = images.shape[1:3]
    scale = scale or max(1, 48 // max(height, width))
    cell_h, cell_w, gap = height * scale, width * scale, 2
    rows, cols = len(class_names), per_class
    canvas = np.full((rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3),
                     GRID_BACKGROUND, np.uint8)
    for row in range(rows):
        members = np.flatnonzero(labels == row)[:per_class]
        for col, index in enumerate(members):
            image = images[index]
            image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            image = image.repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = gap + row * (cell_h + gap), gap + col * (cell_w + gap)
            canvas[top:top + cell_h, left:left + cell_w] = image
    return canvas
