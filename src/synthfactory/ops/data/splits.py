"""Seeded, stratified splits of the real images: train/test, the validation split carved from
train, and the few-shot subset.

Validation is what every choice reads (filter thresholds, recipes, plans, method comparisons):
it is held out of everything that learns, so that the test split is read once, for the final
numbers, by `eval_report`.
"""

from __future__ import annotations

import numpy as np

from synthfactory.ops.seeds import rng


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class random split: about `test_fraction` of each class goes to test.

    The rule: a class of n images puts round(n × test_fraction) in test, but at least one
    and, when n ≥ 2, at most n − 1, so every class with two or more images has at least one
    image in each split. A class of one image puts it in test: a class without a test image
    cannot be measured at all (its accuracy is "no test images"), while one train image
    teaches a classifier little, and the synthetic arms learn a class from its name, not from
    its real train images. (Before, round(0.3) = 0 left such a class untested.)

    `groups` (a group id per image, e.g. `duplicates.duplicate_groups`: identical copies) keeps
    every group on one side: whole groups go to test until the class's count is reached (the
    last may overshoot it), so no copy of a test image is trained on. Without copies the split
    is the one without `groups`.
    """
    train, test = [], []
    placed: dict[int, bool] = {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng(seed, "real_images", "split", int(label)).permutation(len(members))]
        n_test = max(int(round(len(members) * test_fraction)), 1)
        if len(members) >= 2:
            n_test = min(n_test, len(members) - 1)
        in_test, in_train = _take(members, n_test, groups, placed)
        test.extend(in_test)
        train.extend(in_train)
    return np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(test), dtype=np.int64)


def carve_validation(labels: np.ndarray, train: np.ndarray, val_fraction: float, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split train indices into (train, val): about `val_fraction` of each class's train images.

    Stratified and seeded like the test split (its own stream). A class with two or more train
    images keeps at least one in each part; a class with one keeps it in train. `groups`
    keeps each group of copies on one side, as in `stratified_split`.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"real_images.val_fraction = {val_fraction}: must be in (0, 1), e.g. 0.1")
    kept, val = [], []
    placed: dict[int, bool] = {}
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        members = members[rng(seed, "real_images", "val", int(label)).permutation(len(members))]
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        in_val, in_kept = _take(members, n_val, groups, placed)
        val.extend(in_val)
        kept.extend(in_kept)
    return np.asarray(sorted(kept), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64)


def _take(members: np.ndarray, n_taken: int, groups: np.ndarray | None,
          placed: dict[int, bool]) -> tuple[list[int], list[int]]:
    """(taken, left) of one class's shuffled `members`: the first `n_taken`, or with `groups`
    whole groups in the order of their first member until `taken` holds `n_taken`.

    `placed` (group → taken), shared across classes, keeps a group that another class already
    placed (identical images under two labels) on its side. Once `n_taken` is reached the rest
    is left, and a class that could be split keeps at least one group on each side.
    """
    if groups is None:
        return members[:n_taken].tolist(), members[n_taken:].tolist()
    by_group: dict[int, list[int]] = {}
    for member in members.tolist():
        by_group.setdefault(int(groups[member]), []).append(member)
    taken: list[int] = []
    left: list[int] = []
    own: list[int] = []  # the groups this class placed, in order
    for group, images in by_group.items():
        if group in placed:
            (taken if placed[group] else left).extend(images)
    for group, images in by_group.items():
        if group in placed:
            continue
        placed[group] = len(taken) < n_taken
        (taken if placed[group] else left).extend(images)
        own.append(group)
    if n_taken < len(members) and not left and len(own) >= 2:
        # One large group overshot: give the class's last group back to the other side.
        last = own[-1]
        placed[last] = False
        taken = [m for m in taken if int(groups[m]) != last]
        left = by_group[last]
    return taken, left


def few_shot_subset(labels: np.ndarray, train: np.ndarray, per_class: int,
                    seed: int) -> np.ndarray:
    """`per_class` seeded train indices of each class (all of a class that has fewer)."""
    chosen = []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        order = rng(seed, "real_images", "few_shot", int(label)).permutation(len(members))
        chosen.extend(members[order[:per_class]].tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)

