"""Classification metrics on numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty test set is undefined")
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray,
                       n_classes: int) -> list[float | None]:
    """Accuracy within each true class; None for a class with no test image.

    None, not 0.0: a class that was never tested has no accuracy (metrics.json writes null and
    the report says "no test images"), which is not the same as a class always got wrong.
    """
    result: list[float | None] = []
    for label in range(n_classes):
        members = labels == label
        result.append(float(np.mean(predictions[members] == label)) if members.any() else None)
    return result


def mean_per_class(per_seed: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Per-class accuracy averaged over seeds; None stays None (every seed sees the same test
    split, so a class without test images has None in every row)."""
    if not per_seed:
        raise ValueError("mean_per_class of no seeds")
    return [None if any(value is None for value in column)
            else float(np.mean(np.asarray(column, dtype=np.float64)))
            for column in zip(*per_seed, strict=True)]


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class (int64 K×K)."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1: the spread of a few seeds estimates the
    spread of all of them; 0.0 for a single value, which has no spread to estimate)."""
    if not values:
        raise ValueError("mean_std of no values")
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
