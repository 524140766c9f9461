"""Exact duplicates among the real images: identical pixels at the stored resolution.

Image folders that people collect hold copies: the same photo saved twice under two names, a
scrape that fetched one file from two pages, a test folder that shares files with the training
folder. A random split then puts one copy in train and another in test, and the real arm is
measured on images it trained on — it gains, the synthetic arms do not, and the comparison
credits real data with a leak. So copies are found here, on the decoded images (what every
model sees: two files that differ in their bytes but decode to the same pixels are the same
training example), and the splits keep each group of copies on one side
(`splits.stratified_split`/`carve_validation` with `groups`). Nothing is dropped: a class of
many identical frames keeps them all. With the user's own test set (`test_root`), a training
image identical to a test image is left out of training instead (the test set is the user's
to define), counted as skipped.

Copies under two class folders are a label conflict: they stay where they are (the labels are
the user's) and are reported with examples, since no classifier can get both right.
Near-duplicates (a re-encoded or slightly cropped copy) are not found here: that needs a
feature space, which the generated images' leakage check (ops/curation/leakage.py) has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

# Groups of copies listed by name in the manifest and the warnings (label conflicts first).
EXAMPLES = 10


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """A group id per image: images with identical pixels (and shape) share one, the index of
    the group's first image; an image without a copy is its own group (its own index)."""
    first: dict[bytes, int] = {}
    groups = np.empty(len(images), dtype=np.int64)
    for index, image in enumerate(images):
        array = np.ascontiguousarray(image)
        key = hashlib.blake2b(repr(array.shape).encode() + array.tobytes(),
                              digest_size=16).digest()
        groups[index] = first.setdefault(key, index)
    return groups


def copies_of(groups: np.ndarray, indices: np.ndarray, of: np.ndarray) -> np.ndarray:
    """The images among `indices` that are identical to an image among `of` (a boolean mask
    over `indices`): e.g. training images that are copies of test images."""
    return np.isin(groups[indices], groups[of])


@dataclass(frozen=True)
class DuplicateSummary:
    """What the duplicate groups of a dataset are: `copies` images beyond the first of their
    group, in `groups` groups of two or more, `label_conflicts` of which span two or more
    classes; `examples` name the sources of a few groups (conflicts first)."""

    copies: int
    groups: int
    label_conflicts: int
    examples: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """The manifest's `duplicates` entry."""
        return {"copies": self.copies, "groups": self.groups,
                "label_conflicts": self.label_conflicts, "examples": self.examples}

    def warnings(self) -> list[str]:
        """One sentence per kind of duplicate found, each with its count and an example."""
        lines = []
        conflicts = [e for e in self.examples if len(e["classes"]) > 1]
        same_class = [e for e in self.examples if len(e["classes"]) == 1]
        if self.label_conflicts:
            example = conflicts[0]
            lines.append(f"{self.label_conflicts} group(s) of identical images are labelled "
                         f"with two or more classes (e.g. {', '.join(example['sources'][:3])} in "
                         f"{', '.join(example['classes'])}): no classifier can get both labels "
                         "right; fix the labels or remove the copies")
        if same_class:
            example = same_class[0]
            lines.append(f"{self.copies} image(s) are exact copies of another image "
                         f"({self.groups} group(s), e.g. {', '.join(example['sources'][:3])}): "
                         "each group is kept on one side of the train/val/test split")
        return lines


def summarise_duplicates(groups: np.ndarray, labels: np.ndarray, sources: list[str],
                         class_names: list[str]) -> DuplicateSummary:
    """Count the groups of copies and name up to `EXAMPLES` of them (conflicts first)."""
    ids, counts = np.unique(groups, return_counts=True)
    repeated = ids[counts > 1]
    rows = []
    for group in repeated.tolist():
        members = np.flatnonzero(groups == group)
        classes = sorted({class_names[int(labels[m])] for m in members})
        rows.append({"classes": classes, "sources": [sources[int(m)] for m in members]})
    conflicts = sum(1 for row in rows if len(row["classes"]) > 1)
    rows.sort(key=lambda row: len(row["classes"]) == 1)  # stable: conflicts first
    return DuplicateSummary(copies=int(counts[counts > 1].sum() - len(repeated)),
                            groups=len(repeated), label_conflicts=conflicts,
                            examples=rows[:EXAMPLES])
