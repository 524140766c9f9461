"""The report's section on what the generator made: fidelity and diversity of the generated
images against the real images it learned from, and how many of them copy one (measured by
`ops/evaluation/generated_set.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.evaluation.generated_set import MEMORIZATION_GRID
from synthfactory.ops.report.blocks import Figure, Paragraph, ReportSection, Table
from synthfactory.ops.report.plots import png_bytes

COLUMNS = ("fd", "kid", "precision", "recall", "density", "coverage", "diversity",
           "real_diversity")


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def generated_set_section(metrics: dict[str, Any],
                          grids: dict[str, np.ndarray]) -> ReportSection | None:
    """Quality and diversity per class and overall, the memorization rate and the closest
    pairs; None when the run measured neither."""
    quality, memorized = metrics.get("generation_quality"), metrics.get("memorization")
    if not quality or not memorized:
        return None
    rows = [["all", *(_cell(quality["overall"].get(key)) for key in COLUMNS),
             _cell(memorized["rate"])]]
    rows += [[name, *(_cell(group.get(key)) for key in COLUMNS),
              _cell(memorized["per_class"].get(name, {}).get("rate"))]
             for name, group in quality["per_class"].items()]
    blocks: list[Any] = [
        Paragraph(f"The {quality['n_generated']} generated images (replicate r0, before the "
                  f"filter) against {memorized['reference']} ({quality['n_real']} images), in "
                  f"the feature space of the {quality['encoder']}: Fréchet distance and KID "
                  "(lower: closer distributions), precision and density (fidelity), recall and "
                  f"coverage (diversity; k = {quality['k']}), and the mean pairwise cosine "
                  "distance within the generated set beside the real one's. These describe the "
                  "images; they are not training value (the verdicts are)."),
        Table(["class", "FD", "KID", "precision", "recall", "density", "coverage",
               "diversity", "real diversity", "memorized"], rows),
        Paragraph(f"Memorized: {memorized['count']} of {memorized['n']} generated images "
                  f"({memorized['rate']:.1%}) are near-copies of a training image under small "
                  f"edits (similarity ≥ {memorized['threshold']:.4f}; {memorized['calibration']})."
                  )]
    if MEMORIZATION_GRID in grids:
        blocks += [Paragraph("The closest pairs, most similar first: a generated image and its "
                             "nearest training image."),
                   Figure(f"{MEMORIZATION_GRID}.png", "generated image | nearest training image")]
    files = ({f"{MEMORIZATION_GRID}.png": png_bytes(grids[MEMORIZATION_GRID])}
             if MEMORIZATION_GRID in grids else {})
    return ReportSection("What the generator made: quality, diversity, copies", blocks, files)
