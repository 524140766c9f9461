"""The report's opening: every comparison it makes, as a paired difference with its 95% interval
and a verdict, and the forest plot of them (ops/evaluation/verdicts.py computes them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import Block, Figure, Paragraph, ReportSection, Table
from synthfactory.ops.report.plots import comparison_label, forest_plot

FOREST_PNG = "verdicts.png"


def verdict_rows(comparisons: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per comparison: a − b, difference and interval in points, the verdict and
    what the interval covers."""
    return [[comparison_label(c), f"{100 * c['difference']:+.2f}",
             f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]", c["verdict"],
             ", ".join(c.get("covers", [])) or "nothing"] for c in comparisons]


def not_covered_text(comparisons: list[dict[str, Any]]) -> str:
    """What the intervals leave out, each item naming the comparisons it applies to when it
    does not apply to all of them (with replicates, only the arms that are one draw: e.g. the
    distilled set, the retrieved set)."""
    applies: dict[str, list[str]] = {}
    for comparison in comparisons:
        for item in comparison.get("not_covered", []):
            applies.setdefault(item, []).append(comparison_label(comparison))
    return "; ".join(item if len(labels) == len(comparisons) else
                     f"{item} (for {', '.join(labels)})"
                     for item, labels in sorted(applies.items()))


def verdicts_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """The page's first section: its title, the verdicts and the forest plot; what the
    intervals cover and do not, and the equal-compute budget they rest on."""
    classifier = metrics.get("classifier", {})
    architecture = classifier.get("architecture")
    title = f"synthfactory evaluation: {metrics['dataset']}" + (
        f" ({architecture})" if architecture else "")
    comparisons = metrics.get("comparisons", [])
    if not comparisons:
        return ReportSection(title, [Paragraph(
            "No comparison could be made: the report needs the real arm and at least one other "
            "measured arm (see the arms not built below).")])
    blocks: list[Block] = [
        Paragraph("The answers, each a paired difference in test accuracy (a − b, in points) "
                  "with a 95% interval from a bootstrap that resamples, together for both arms, "
                  "the test images and the classifier seeds (and the replicates, where there "
                  "are several): `better` or `worse` when the interval excludes zero, else "
                  "`indistinguishable`."),
        Table(["comparison", "difference (pt)", "95% interval", "verdict", "covers"],
              verdict_rows(comparisons)),
        Figure(FOREST_PNG, "paired differences with their 95% intervals")]
    not_covered = not_covered_text(comparisons)
    if not_covered:
        blocks.append(Paragraph(f"Not covered by these intervals: {not_covered}."))
    budget = metrics.get("budget", {})
    if budget.get("reason"):
        blocks.append(Paragraph(f"Equal compute: {budget['reason']}."))
    for arm, why in budget.get("own_schedule", {}).items():
        if why:
            blocks.append(Paragraph(f"{arm}: {why}."))
    if metrics.get("comparisons_note"):
        blocks.append(Paragraph(metrics["comparisons_note"]))
    return ReportSection(title, blocks, files={FOREST_PNG: forest_plot(
        comparisons, f"{metrics['dataset']}: paired differences, 95% intervals")})
