"""The report's section on the user's own data (images per class and split, with the warnings
they raise), and the mark the per-class accuracy table puts beside a class whose accuracy is
noise (`noise_mark`). The `data` entry itself is made by `ops/evaluation/class_sizes.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.data.preflight import MIN_TEST_FOR_ACCURACY
from synthfactory.ops.report.blocks import Paragraph, ReportSection, Table

NOISE_MARK = " †"
NOISE_NOTE = (f"† fewer than {MIN_TEST_FOR_ACCURACY} test images: this class's per-class accuracy "
              f"is noise (one image moves it by more than {100 / MIN_TEST_FOR_ACCURACY:g} points).")


def noise_mark(metrics: dict[str, Any], class_name: str) -> str:
    """The mark to put beside a class whose per-class accuracy is noise ("" otherwise)."""
    small = (metrics.get("data") or {}).get("small_test_classes") or {}
    return NOISE_MARK if class_name in small else ""


def class_sizes_section(metrics: dict[str, Any],
                        grids: dict[str, np.ndarray]) -> ReportSection | None:
    """Images per class in train, validation and test, with the warnings they raise."""
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
