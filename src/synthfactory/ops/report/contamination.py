"""The report's leakage section: the count of near-copies of test images (stated even when zero),
per class, the calibration on validation images and the pair grid (counted by
`ops/evaluation/contamination.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.evaluation.contamination import GRID
from synthfactory.ops.report.blocks import Figure, Paragraph, ReportSection, Table
from synthfactory.ops.report.plots import png_bytes


def contamination_section(metrics: dict[str, Any],
                          grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The count of near-copies of test images (even when zero), per class, and the pair grid."""
    entry = metrics.get("contamination")
    if not entry:
        return None
    threshold, baseline = entry["threshold"], entry["real_val_baseline"]
    blocks: list[Any] = [Paragraph(
        f"{entry['count']} of {entry['n_synthetic']} synthetic images are near-copies of one of "
        f"the {entry['n_test']} real test images (judge-feature cosine ≥ {threshold['feature']} "
        f"and pixel correlation at ≤{entry['pixel_resolution']} px ≥ {threshold['pixel']}, for "
        "the same test image). A near-copy lets an arm train on what it is tested on and "
        "inflates its accuracy.")]
    if entry["count"]:
        kept = entry.get("kept_by_filter")
        blocks.append(Paragraph(
            "Per class of the synthetic image: " + ", ".join(
                f"{name} {count}" for name, count in entry["per_class"].items() if count)
            + "." + ("" if kept is None else f" The filtered set keeps {kept} of them "
                     "(filtered_set.drop_test_near_duplicates removes them).")))
    robust = entry.get("edit_robust")
    if robust:
        blocks.append(Paragraph(
            f"Under small edits (a shift, a crop, blur, noise, contrast, a flip: the copy "
            f"detector), {robust['count']} of {robust['n']} synthetic images are near-copies "
            f"of a test image (similarity ≥ {robust['threshold']:.4f}, the threshold at which "
            f"{robust['fpr']:.0%} of real validation images would be called copies of their "
            f"nearest test image: about {robust['expected_by_chance']} by chance)."))
    blocks.append(Paragraph(
        f"Calibration: {baseline['count']} of {baseline['n']} real validation images (independent "
        "of the test images) pass the same rule; more than none means the thresholds are loose "
        "for this data or the data set holds the same image in two splits."))
    grid = entry.get("grid", {})
    if grid.get("rows") and GRID in grids:
        label = ("the near-copies" if grid["shows"] == "near-copies"
                 else "none is a near-copy; the closest pairs in pixels, for a look")
        blocks += [Paragraph(f"Each row: a synthetic image and its test image ({label})."),
                   Figure(f"{GRID}.png", "synthetic image | nearest real test image"),
                   Table(["row", "synthetic", "class", "test image", "feature cosine",
                          "pixel correlation"],
                         [[index, row["key"], row["class_name"], row["test_key"],
                           f"{row['feature_similarity']:.4f}", f"{row['pixel_similarity']:.4f}"]
                          for index, row in enumerate(grid["rows"])])]
    files = {f"{GRID}.png": png_bytes(grids[GRID])} if GRID in grids and grid.get("rows") else {}
    return ReportSection("Leakage: near-copies of test images", blocks, files)
