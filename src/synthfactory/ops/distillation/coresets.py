"""Coresets: `ipc` existing samples per class.

`random`, `herding` (Welling 2009: the running mean of the selection tracks the class mean) and
`kcenter` (greedy farthest-point cover), the latter two in the judge's feature space.
"""

from __future__ import annotations

import numpy as np

from synthfactory.ops.data.preflight import TooFewImages
from synthfactory.ops.distillation.cells import METHODS
from synthfactory.ops.seeds import rng


def check_method(method: str) -> None:
    """Unknown method names fail with the list of known ones."""
    if method not in METHODS:
        raise ValueError(f"distilled_set.methods has {method!r}, not one of {', '.join(METHODS)}")


def class_members(labels: np.ndarray, ipc: int) -> list[np.ndarray]:
    """Indices of each class, checking every class has at least `ipc` samples."""
    if ipc <= 0:
        raise ValueError(f"ipc {ipc}: every distilled_set.ipcs entry must be at least 1")
    members = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        if len(indices) < ipc:
            # Not a crash: the cell (and, for the headline cell, the distilled arm) is recorded
            # as not built, with this reason.
            raise TooFewImages(f"class {int(label)} has {len(indices)} samples in the source set, "
                               f"fewer than ipc = {ipc}: lower distilled_set.ipcs or use a "
                               "larger source (loosen filtered_set)")
        members.append(indices)
    return members


def select_random(labels: np.ndarray, ipc: int, seed: int) -> np.ndarray:
    """`ipc` seeded random indices per class, class by class."""
    chosen = [np.sort(rng(seed, "random", int(labels[m[0]])).choice(m, ipc, replace=False))
              for m in class_members(labels, ipc)]
    return np.concatenate(chosen)


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def select_herding(features: np.ndarray, labels: np.ndarray, ipc: int) -> np.ndarray:
    """Herding: each pick brings the mean of the picks closest to the class mean."""
    unit = _unit(features.astype(np.float64))
    chosen = []
    for members in class_members(labels, ipc):
        points = unit[members]
        target = points.mean(axis=0)
        total = np.zeros_like(target)
        available = np.ones(len(members), bool)
        for count in range(1, ipc + 1):
            distance = np.linalg.norm(target - (total + points) / count, axis=1)
            distance[~available] = np.inf
            pick = int(np.argmin(distance))
            available[pick] = False
            total += points[pick]
            chosen.append(members[pick])
    return np.asarray(chosen, dtype=np.int64)


def select_kcenter(features: np.ndarray, labels: np.ndarray, ipc: int, seed: int) -> np.ndarray:
    """Greedy k-center: start nearest the class mean, then always add the farthest sample.

    A picked sample is never picked again: with duplicates every remaining distance can be 0, and
    `argmax` would return an earlier pick (the previous version did). Deterministic; `seed` is
    accepted for a uniform signature with the random selection.
    """
    del seed  # the start is the sample nearest the mean, so no randomness is needed
    unit = _unit(features.astype(np.float64))
    chosen = []
    for members in class_members(labels, ipc):
        points = unit[members]
        first = int(np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1)))
        picks = [first]
        nearest = np.linalg.norm(points - points[first], axis=1)
        nearest[first] = -np.inf
        while len(picks) < ipc:
            pick = int(np.argmax(nearest))
            picks.append(pick)
            nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
            nearest[picks] = -np.inf
        chosen.extend(members[picks])
    return np.asarray(chosen, dtype=np.int64)


