"""The report's account of the arms: the question each one answers, and what the baselines
need beside their accuracy (the retrieved set's label precision, where its images came from)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.evaluation.arms import ARMS
from synthfactory.ops.report.blocks import Figure, Paragraph, ReportSection, Table
from synthfactory.ops.report.plots import png_bytes
from synthfactory.ops.report.tables import arm_group, ordered_arms


def arm_notes(arm: str, row: dict[str, Any], real: dict[str, Any] | None) -> str:
    """What to read beside an arm's accuracy."""
    if arm == "retrieved":
        retrieval = row.get("retrieval", {})
        precision = row.get("label_precision")
        pool = retrieval.get("pool", "?")
        text = (f"{retrieval.get('per_class', '?')} per class from {pool}, ranked by "
                f"{retrieval.get('query', '?')}")
        labelled = retrieval.get("labelled")
        if labelled:
            text += (f"; the labelled part ({labelled['size']} images: {labelled['source']}) "
                     "is all the ranking learned from, and the pool excludes it")
        copies = retrieval.get("test_near_copies")
        if copies:
            text += (f"; {copies['dropped']} of {copies['checked']} pool images dropped as "
                     "near-copies of test images")
        if precision is None:
            return text + "; the pool has no hidden labels, so no label precision"
        return text + (f"; label precision {precision['overall']:.3f} (measured on the pool's "
                       "hidden labels, never used)")
    if arm == "mixed" and real is not None:
        return f"{row['n_train'] - real['n_train']} synthetic images added to the real ones"
    if arm == "zero_shot":
        return "no training: the judge's text embeddings of the class names"
    return ""


def arms_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """One row per arm: its group, the question it answers, notes (label precision, ...)."""
    real = metrics["arms"].get("real")
    rows = [[arm, arm_group(metrics, arm), ARMS[arm].question if arm in ARMS else "",
             arm_notes(arm, metrics["arms"][arm], real)] for arm in ordered_arms(metrics)]
    blocks: list[Any] = [Table(["arm", "group", "what it answers", "notes"], rows)]
    if metrics.get("few_shot"):
        blocks.append(Paragraph(f"Few-shot: every model that learns from real images (the "
                                f"generator, the judge, the real and mixed arms) sees only "
                                f"{metrics['few_shot']} real training images per class."))
    files = {}
    if "retrieved" in grids:
        files["grid_retrieved.png"] = png_bytes(grids["retrieved"])
        blocks.append(Figure("grid_retrieved.png", "retrieved images, one row per class they "
                                                   "were retrieved for"))
    return ReportSection("What each arm answers", blocks, files)

