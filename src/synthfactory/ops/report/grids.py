"""The report's image grids of each set, one row per class: real (test split), synthetic, kept,
rejected, distilled (when the headline cell was built) and retrieved (when that arm was
measured). The contamination pairs' grid is made with the contamination entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from synthfactory.ops.data.real_images import read_image_shape, read_split
from synthfactory.ops.evaluation.arms import distilled_arm, grid_samples, retrieved_arm
from synthfactory.ops.evaluation.grids import image_grid
from synthfactory.ops.storage.not_built import read_not_built


def set_grids(require: Callable[..., Path], class_names: list[str], per_class: int,
              retrieved: bool) -> dict[str, np.ndarray]:
    """Image grids of each set, per class (`require`: the store's, by asset name)."""
    real_dir = require("real_images")
    real_images, real_labels, _ = read_split(real_dir, "test")
    # Only the pictured samples are read (the synthetic set may not fit in memory).
    synthetic = grid_samples(require("synthetic_shards"), require("filtered_set"),
                             per_class, read_image_shape(real_dir))

    def grid(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return image_grid(images, labels, class_names, per_class=per_class)

    found = {
        "real": grid(real_images, real_labels),
        "synthetic": grid(*synthetic["synthetic"]),
        "kept": grid(*synthetic["kept"]),
        "rejected": grid(*synthetic["rejected"]),
    }
    if read_not_built(require("distilled_set")) is None:
        distilled = distilled_arm(require("distilled_set"))
        found["distilled"] = grid(distilled.images, distilled.labels)
    if retrieved:
        data = retrieved_arm(require("retrieved_set"))
        found["retrieved"] = grid(data.images, data.labels)
    return found
