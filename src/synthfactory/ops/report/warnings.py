"""The report's first section when the run is not sound: every warning of metrics.json's
`warnings` (ops/evaluation/soundness.py), each with the number that tripped it and its bound,
above the verdicts, so that nobody reads the table as an answer without seeing them first."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import Paragraph, ReportSection, Table

# What each kind of warning is about, in the table's words.
KIND_NAMES = {"generator_unconverged": "generator did not converge",
              "class_pass_rate": "judge recognises few of a class",
              "seed_spread": "seeds disagree",
              "underfit": "arm did not fit its training set",
              "real_below_control": "real arm below its longer-trained control",
              "synthetic_below_real": "generated set far below real",
              "weak_retrieval": "retrieval baseline mislabels its images",
              "skipped_images": "real image files could not be used",
              "label_conflicts": "identical real images under two classes"}


def warnings_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]
                     ) -> ReportSection | None:
    """The warnings, first in the report (None when there are none: the verdicts open it)."""
    warnings = metrics.get("warnings") or []
    if not warnings:
        return None
    rows = [[KIND_NAMES.get(w["kind"], w["kind"]), w["subject"], f"{w['value']:.4g}",
             f"{w['bound']:g}"] for w in warnings]
    return ReportSection(f"Warnings: this run may not be sound ({len(warnings)})", [
        Paragraph("Each line below crossed a bound of eval_report.warnings (the generator's: "
                  "generator.ddpm.min_delta). Read the verdicts and the tables after them with "
                  "these in mind: real images that could not be read or carry conflicting "
                  "labels limit every arm, an arm that did not fit or whose seeds disagree does "
                  "not measure its data, and a generator that did not converge or cannot draw a "
                  "class makes every synthetic arm worse than it has to be."),
        Table(["warning", "subject", "value", "bound"], rows),
        *[Paragraph(f"{w['subject']}: {w['message']}") for w in warnings]])
