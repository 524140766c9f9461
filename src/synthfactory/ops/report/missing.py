"""The report's section on the arms that were not built, and why (read from their records by
`ops/evaluation/missing.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import Paragraph, ReportSection, Table


def missing_arms_section(metrics: dict[str, Any],
                         grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The arms that could not be built and why (None when every arm was built)."""
    missing = metrics.get("missing_arms") or {}
    if not missing:
        return None
    built = ", ".join(sorted(metrics["arms"])) or "none"
    return ReportSection("Arms not built", [
        Paragraph(f"{len(missing)} arm(s) could not be built from their data and are absent "
                  f"from every table and figure of this report; the others ({built}) were "
                  "trained and measured as usual."),
        Table(["arm", "why it was not built"], [[arm, reason]
                                                for arm, reason in sorted(missing.items())])])
