"""The report's view of the user's own data: images per class and split, and what they weaken.

`metrics.json`'s `data` entry holds the per-class train/val/test counts of `real_images`, the
warnings of `preflight.class_size_warnings` (a class more than 10x another, a class with fewer
than 20 test images) and the classes whose per-class accuracy is noise. The per-class accuracy
table marks those classes beside their numbers (`noise_mark`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from synthfactory.ops.checks import CheckOutcome
from synthfactory.ops.data.preflight import (
    MIN_TEST_FOR_ACCURACY,
    Counts,
    class_size_warnings,
    small_test_classes,
)

if TYPE_CHECKING:  # report.py lists this module's section: import its blocks when building
    from synthfactory.ops.evaluation.report import ReportSection

NOISE_MARK = " †"
NOISE_NOTE = (f"† fewer than {MIN_TEST_FOR_ACCURACY} test images: this class's per-class accuracy "
              f"is noise (one image moves it by more than {100 / MIN_TEST_FOR_ACCURACY:g} points).")


def data_entry(counts: Counts) -> dict[str, Any]:
    """`metrics.json`'s `data`: per-class counts per split, warnings, classes too small to read."""
    return {"class_counts": counts, "warnings": class_size_warnings(counts),
            "small_test_classes": small_test_classes(counts)}


def noise_mark(metrics: dict[str, Any], class_name: str) -> str:
    """The mark to put beside a class whose per-class accuracy is noise ("" otherwise)."""
    small = (metrics.get("data") or {}).get("small_test_classes") or {}
    return NOISE_MARK if class_name in small else ""


def class_sizes_section(metrics: dict[str, Any],
                        grids: dict[str, np.ndarray]) -> ReportSection | None:
    """Images per class in train, validation and test, with the warnings they raise."""
    from synthfactory.ops.evaluation.report import Paragraph, ReportSection, Table

    entry = metrics.get("data")
    if not entry:
        return None
    counts = entry["class_counts"]
    splits = [split for split in ("train", "val", "test") if split in counts]
    blocks: list[Any] = [Paragraph(f"Warning: {warning}.") for warning in entry["warnings"]]
    blocks.append(Table(["class", *splits],
                        [[f"{name}{noise_mark(metrics, name)}",
                          *(counts[split].get(name, 0) for split in splits)]
                         for name in counts[splits[0]]]))
    if entry["small_test_classes"]:
        blocks.append(Paragraph(NOISE_NOTE))
    return ReportSection("Real images per class", blocks)


def class_sizes_outcome(counts: Counts) -> CheckOutcome:
    """Passes when the classes are balanced within 10x and each has 20 or more test images."""
    warnings = class_size_warnings(counts)
    details = {"warnings": warnings, "small_test_classes": small_test_classes(counts)}
    if not warnings:
        return CheckOutcome(True, "classes within 10x of each other, every class with "
                                  f"{MIN_TEST_FOR_ACCURACY}+ test images", details)
    return CheckOutcome(False, "; ".join(warnings), details)
