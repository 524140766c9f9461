"""The report's weak-class refinement section: per round the refined arm against its
equal-budget uniform control, per class before and after, the worst class, and why each class
got what it got (the `refinement` entry is made by `ops/refinement/summary.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import (Block, Paragraph, ReportSection, Table,
                                            accuracy_cell)


def refinement_section(metrics: dict[str, Any],
                       grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The loop: per round refined vs uniform, per class before/after, the worst class."""
    loop = metrics.get("refinement")
    if not loop:
        return None
    names = metrics["classes"]
    base = metrics["arms"][loop["base_arm"]]
    blocks: list[Block] = [Paragraph(
        f"Each round reads validation results only (the {loop['base_arm']} arm in round 1, the "
        "refined arm after), spends its budget on the classes that trail the real arm, in "
        "proportion to the gap, with recipe changes chosen from the judge's pass rate and the "
        "confusion pairs; the uniform arm spends the same number of images evenly over classes "
        "with the base recipe. Accuracies below are on the real test split.")]
    blocks.append(Table(
        ["round", "budget", "refined n_train", "refined", "uniform", "refined − uniform"],
        [[r["round"], r["budget"], r["refined"]["n_train"],
          f"{r['refined']['accuracy_mean']:.4f} ± {r['refined']['accuracy_std']:.4f}",
          f"{r['uniform']['accuracy_mean']:.4f} ± {r['uniform']['accuracy_std']:.4f}",
          f"{r['refined']['accuracy_mean'] - r['uniform']['accuracy_mean']:+.4f}"]
         for r in loop["rounds"]]))
    last = loop["rounds"][-1]
    rows = []
    for index, name in enumerate(names):
        images = sum(r["allocation"].get(name, 0) for r in loop["rounds"])
        changes = sorted({c for r in loop["rounds"] for c in r["changes"].get(name, [])})
        rows.append([name, images, ", ".join(changes) or "-",
                     accuracy_cell(base["per_class_accuracy"][index]),
                     accuracy_cell(last["refined"]["per_class_accuracy"][index]),
                     accuracy_cell(last["uniform"]["per_class_accuracy"][index])])
    blocks.append(Table(["class", "extra images", "changes", f"before ({loop['base_arm']})",
                         "after (refined)", "after (uniform)"], rows))
    worst = loop["worst_class"]
    if None in (worst["before"], worst["after"], worst["uniform_after"]):
        on_test = "the test split has no image of it"
    else:
        on_test = (f"on test {worst['before']:.3f} before, {worst['after']:.3f} after "
                   f"refinement ({worst['after'] - worst['before']:+.3f}), "
                   f"{worst['uniform_after']:.3f} with the uniform control")
    blocks.append(Paragraph(
        f"Worst class on validation: {worst['name']} (validation accuracy "
        f"{worst['val_accuracy']:.2f}); {on_test}."))
    for r in loop["rounds"]:
        for name, why in r["why"].items():
            if r["allocation"].get(name):
                blocks.append(Paragraph(f"Round {r['round']}, class {name}: {why}."))
    return ReportSection("Weak-class refinement", blocks)
