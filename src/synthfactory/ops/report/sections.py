"""The report's own sections: the summary, per-class accuracy, filtering, distillation,
confusion matrices, image grids and lineage (the other sections have a module each)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import (Block, Figure, Paragraph, ReportSection, Table,
                                            accuracy_cell)
from synthfactory.ops.report.class_sizes import NOISE_NOTE, noise_mark
from synthfactory.ops.report.plots import (accuracy_plot, confusion_plot, per_class_plot,
                                           png_bytes)
from synthfactory.ops.report.tables import arm_table, ordered_arms

# The standard image grids, in the order the report shows them (one row per class).
GRID_NAMES = ("real", "synthetic", "kept", "rejected", "distilled")


def summary_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """The question, the arm table (grouped, Δ vs real), what the spread covers, the plot."""
    classifier = metrics.get("classifier", {})
    architecture = classifier.get("architecture")
    blocks: list[Block] = [
        Paragraph("How good is synthetic data for these classes, and what did each step add? "
                  "Every arm trains the same classifier from scratch and is tested on the same "
                  f"real held-out images ({metrics.get('n_test', '?')} of them)."),
        Table(*arm_table(metrics))]
    if metrics.get("spread"):
        blocks.append(Paragraph(f"± is the {metrics['spread']}. Validation accuracy (the real "
                                "validation split, held out of everything that learns) is what "
                                "choices read; test accuracy is the final number."))
    replicates = metrics.get("replicates") or {}
    if replicates.get("asked", 1) > 1:
        pooled = ", ".join(f"{arm} ({', '.join(ids)})"
                           for arm, ids in replicates.get("pooled", {}).items())
        missing = "; ".join(f"{arm} lacks {', '.join(ids)} (not materialized or not built)"
                            for arm, ids in replicates.get("missing", {}).items())
        blocks.append(Paragraph(
            f"Replicates: {replicates['asked']} independent draws of "
            f"{', '.join(replicates.get('replicated', []))} and of the classifiers trained on "
            f"them; pooled: {pooled or 'none'}." + (f" Missing: {missing}." if missing else "")
            + " The generator's weights, the real split and the judge are shared."))
    if architecture:
        blocks.append(Paragraph(f"Classifier: {architecture}, " + ", ".join(
            f"{key.replace('_', ' ')} {value}" for key, value in classifier.items()
            if key != "architecture") + "."))
    blocks.append(Figure("accuracy.png", "accuracy per arm"))
    return ReportSection(title="Accuracy per arm", blocks=blocks,
                         files={"accuracy.png": accuracy_plot(metrics)})


def per_class_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """Accuracy within each class, per arm."""
    arms = ordered_arms(metrics)
    # A class with too few test images is marked beside its numbers (noise_mark, NOISE_NOTE).
    rows = [[f"{name}{noise_mark(metrics, name)}",
             *(accuracy_cell(metrics["arms"][arm]["per_class_accuracy"][index])
               for arm in arms)]
            for index, name in enumerate(metrics["classes"])]
    noisy = [Paragraph(NOISE_NOTE)] if any(noise_mark(metrics, n) for n in metrics["classes"]) else []
    return ReportSection("Per-class accuracy",
                         [Table(["class", *arms], rows), *noisy,
                          Figure("per_class.png", "per-class accuracy")],
                         files={"per_class.png": per_class_plot(metrics)})


def filtering_section(metrics: dict[str, Any],
                      grids: dict[str, np.ndarray]) -> ReportSection | None:
    """What the filter kept, why it rejected the rest, and each class's pass rate."""
    summary = metrics.get("filter")
    if not summary:
        return None
    blocks: list[Block] = [Paragraph(f"Kept {summary['kept']} of {summary['total']} synthetic "
                                     f"images ({summary['kept_fraction']:.1%}).")]
    if summary.get("judge_agreement") is not None:
        blocks.append(Paragraph(f"The judge labels {summary['judge_agreement']:.1%} of the "
                                "generated images as their prompt's class."))
    reasons = summary.get("reasons", {})
    if reasons:
        blocks.append(Table(["rejection reason", "count"],
                            [[reason, count] for reason, count in reasons.items()]))
    blocks.append(Table(["class", "kept", "total", "pass rate", "mean confidence"],
                        [[name, row["kept"], row["total"], f"{row['pass_rate']:.2f}",
                          f"{row['mean_confidence']:.3f}"]
                         for name, row in summary.get("per_class", {}).items()]))
    return ReportSection("Filtering", blocks)


def distillation_section(metrics: dict[str, Any],
                         grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The distillation method, images per class and label kind."""
    distillation = metrics.get("distillation")
    if not distillation:
        return None
    return ReportSection("Distillation", [Paragraph(
        f"Method {distillation.get('method')}, {distillation.get('ipc')} images per class, "
        f"{distillation.get('labels', 'hard')} labels"
        + (f", from the {distillation['source']} set" if distillation.get("source") else "")
        + " (the distilled arm: the first cell of the table).")])


def confusion_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """A row-normalised confusion matrix per arm (summed over seeds)."""
    files = {f"confusion_{arm}.png": confusion_plot(np.asarray(metrics["arms"][arm]["confusion"]),
                                                    metrics["classes"],
                                                    f"{arm}: confusion (rows: true)")
             for arm in ordered_arms(metrics) if "confusion" in metrics["arms"][arm]}
    return ReportSection("Confusion matrices", [Figure(name, name[:-4]) for name in files], files)


def images_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """The standard image grids: one row per class, in class order."""
    names = [name for name in GRID_NAMES if name in grids]
    files = {f"grid_{name}.png": png_bytes(grids[name]) for name in names}
    classes = ", ".join(str(name) for name in metrics["classes"])
    return ReportSection("Images", [Paragraph(f"One row per class, in this order: {classes}."),
                                    *(Figure(f"grid_{name}.png", name) for name in names)], files)


def lineage_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """What the numbers were made from: params digest, seed, data and model digests."""
    rows = [[key, ", ".join(f"{k}: {v}" for k, v in value.items())
             if isinstance(value, dict) else value]
            for key, value in metrics.get("lineage", {}).items()]
    return ReportSection("Lineage", [Table(["what", "value"], rows)])
