"""Seeded, stratified splits of the real images: train/test and the few-shot subset."""

from __future__ import annotations

import numpy as np

from synthfactory.ops.seeds import rng


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class random split: about `test_fraction` of each class goes to test.

    Every class with two or more images keeps at least one in each split.
    """
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng(seed, "real_images", "split", int(label)).permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(test), dtype=np.int64)


def few_shot_subset(labels: np.ndarray, train: np.ndarray, per_class: int,
                    seed: int) -> np.ndarray:
    """`per_class` seeded train indices of each class (all of a class that has fewer)."""
    chosen = []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        order = rng(seed, "real_images", "few_shot", int(label)).permutation(len(members))
        chosen.extend(members[order[:per_class]].tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)

