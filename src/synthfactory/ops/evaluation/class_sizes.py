"""The evaluation's view of the user's own data: images per class and split, and what they weaken.

`metrics.json`'s `data` entry holds the per-class train/val/test counts of `real_images`, the
warnings of `preflight.class_size_warnings` (a class more than 10x another, a class with fewer
than 20 test images) and the classes whose per-class accuracy is noise; the report's section
and the per-class table's marks are in `ops/report/class_sizes.py`.
"""

from __future__ import annotations

from typing import Any

from synthfactory.ops.checks import CheckOutcome
from synthfactory.ops.data.preflight import (
    MIN_TEST_FOR_ACCURACY,
    Counts,
    class_size_warnings,
    small_test_classes,
)


def data_entry(counts: Counts) -> dict[str, Any]:
    """`metrics.json`'s `data`: per-class counts per split, warnings, classes too small to read."""
    return {"class_counts": counts, "warnings": class_size_warnings(counts),
            "small_test_classes": small_test_classes(counts)}


def class_sizes_outcome(counts: Counts) -> CheckOutcome:
    """Passes when the classes are balanced within 10x and each has 20 or more test images."""
    warnings = class_size_warnings(counts)
    details = {"warnings": warnings, "small_test_classes": small_test_classes(counts)}
    if not warnings:
        return CheckOutcome(True, "classes within 10x of each other, every class with "
                                  f"{MIN_TEST_FOR_ACCURACY}+ test images", details)
    return CheckOutcome(False, "; ".join(warnings), details)
