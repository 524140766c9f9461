"""Classification metrics on numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty test set is undefined")
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, n_classes: int) -> list[float]:
    """Accuracy within each true class; a class with no test sample reports 0.0."""
    result = []
    for label in range(n_classes):
        members = labels == label
        result.append(float(np.mean(predictions[members] == label)) if members.any() else 0.0)
    return result


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
