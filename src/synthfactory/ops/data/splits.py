"""Seeded, stratified splits of the real images: train/test, the validation split carved from
train, and the few-shot subset.

Validation is what every choice reads (filter thresholds, recipes, plans, method comparisons):
it is held out of everything that learns, so that the test split is read once, for the final
numbers, by `eval_report`.
"""

from __future__ import annotations

import numpy as np

from synthfactory.ops.seeds import rng


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class random split: about `test_fraction` of each class goes to test.

    The rule: a class of n images puts round(n × test_fraction) in test, but at least one
    and, when n ≥ 2, at most n − 1, so every class with two or more images has at least one
    image in each split. A class of one image puts it in test: a class without a test image
    cannot be measured at all (its accuracy is "no test images"), while one train image
    teaches a classifier little, and the synthetic arms learn a class from its name, not from
    its real train images. (Before, round(0.3) = 0 left such a class untested.)
    """
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng(seed, "real_images", "split", int(label)).permutation(len(members))]
        n_test = max(int(round(len(members) * test_fraction)), 1)
        if len(members) >= 2:
            n_test = min(n_test, len(members) - 1)
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(test), dtype=np.int64)


def carve_validation(labels: np.ndarray, train: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split train indices into (train, val): about `val_fraction` of each class's train images.

    Stratified and seeded like the test split (its own stream). A class with two or more train
    images keeps at least one in each part; a class with one keeps it in train.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"real_images.val_fraction = {val_fraction}: must be in (0, 1), e.g. 0.1")
    kept, val = [], []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        members = members[rng(seed, "real_images", "val", int(label)).permutation(len(members))]
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val.extend(members[:n_val].tolist())
        kept.extend(members[n_val:].tolist())
    return np.asarray(sorted(kept), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64)


def few_shot_subset(labels: np.ndarray, train: np.ndarray, per_class: int,
                    seed: int) -> np.ndarray:
    """`per_class` seeded train indices of each class (all of a class that has fewer)."""
    chosen = []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        order = rng(seed, "real_images", "few_shot", int(label)).permutation(len(members))
        chosen.extend(members[order[:per_class]].tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)

