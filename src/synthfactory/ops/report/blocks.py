"""The building blocks of a report section: paragraphs, tables and figures, and the section.

A leaf module: every section module imports it, and `document.py` (which imports the sections)
renders the blocks, so no section needs the module that lists it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# What the report says of a class that the test split has no image of (its accuracy is null).
NO_TEST_IMAGES = "no test images"


@dataclass(frozen=True)
class Paragraph:
    """Plain text (escaped for HTML; numbers and fixed words, no markup)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table: the first column left-aligned, the others right-aligned."""

    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Figure:
    """A PNG file of the report (its bytes are in the section's `files`), with its alt text."""

    name: str
    alt: str


Block = Paragraph | Table | Figure


@dataclass(frozen=True)
class ReportSection:
    """A titled part of the report and the PNG files it adds beside report.md."""

    title: str
    blocks: list[Block]
    files: dict[str, bytes] = field(default_factory=dict)


SectionBuilder = Callable[[dict[str, Any], dict[str, np.ndarray]], ReportSection | None]


def accuracy_cell(value: float | None) -> str:
    """A per-class test accuracy for a table; a class the test split lacks has none."""
    return NO_TEST_IMAGES if value is None else f"{value:.3f}"
