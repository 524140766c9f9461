"""The report's leakage entry: counted (even at zero), per class, side by side, checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthfactory.ops.evaluation.contamination import (
    GRID,
    contamination_outcome,
    measure_contamination,
)
from synthfactory.ops.report.contamination import contamination_section
from synthfactory.ops.report.document import render_markdown

SETTINGS = {"feature_threshold": 0.95, "pixel_threshold": 0.995, "pixel_resolution": 16,
            "grid_pairs": 4}


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 8, 8, 1), dtype=np.uint8)


def _embed(images: np.ndarray) -> np.ndarray:
    """A stand-in judge: a fixed nonnegative projection of the pixels."""
    projection = np.abs(np.random.default_rng(9).normal(size=(64, 16)))
    return images.reshape(len(images), -1).astype(np.float64) @ projection - 3000.0


def _measure(synthetic: np.ndarray, test: np.ndarray) -> tuple[dict, np.ndarray]:
    labels = np.arange(len(synthetic)) % 2
    keys = [f"s{i:03d}" for i in range(len(synthetic))]
    return measure_contamination(synthetic, labels, keys, test,
                                 [f"test{i:03d}" for i in range(len(test))], _images(6, 3),
                                 _embed, ["cat", "dog"], kept_keys={"s001", "s002"}, **SETTINGS)


def test_planted_test_images_are_counted_per_class_and_shown_side_by_side() -> None:
    test = _images(20, 1)
    synthetic = _images(10, 2)
    synthetic[[1, 4, 7]] = test[[5, 6, 7]]  # planted copies: classes dog, cat, dog
    entry, grid = _measure(synthetic, test)
    assert entry["count"] == 3 and entry["per_class"] == {"cat": 1, "dog": 2}
    assert [(row["key"], row["test_key"]) for row in entry["near_copies"]] == [
        ("s001", "test005"), ("s004", "test006"), ("s007", "test007")]
    assert entry["kept_by_filter"] == 1  # s001 is among the kept keys
    assert entry["grid"]["shows"] == "near-copies" and len(entry["grid"]["rows"]) == 3
    assert grid.shape[0] > grid.shape[1]  # 3 rows of (synthetic | test) pairs
    assert not contamination_outcome({"contamination": entry}).passed
    section = contamination_section({"contamination": entry}, {GRID: grid})
    text = render_markdown([section])
    assert "3 of 10 synthetic images are near-copies of one of the 20 real test images" in text
    assert "cat 1, dog 2" in text and f"{GRID}.png" in section.files


def test_zero_near_copies_are_stated_and_the_closest_pairs_shown(tmp_path: Path) -> None:
    entry, grid = _measure(_images(10, 2), _images(20, 1))
    assert entry["count"] == 0 and entry["per_class"] == {"cat": 0, "dog": 0}
    assert entry["threshold"] == {"feature": 0.95, "pixel": 0.995}
    assert entry["grid"]["shows"] == "closest pairs" and len(entry["grid"]["rows"]) == 4
    assert contamination_outcome({"contamination": entry}).passed
    text = render_markdown([contamination_section({"contamination": entry}, {GRID: grid})])
    assert "0 of 10 synthetic images are near-copies" in text
    assert "none is a near-copy; the closest pairs" in text
