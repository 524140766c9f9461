"""What the refinement loop did, for `metrics.json` and the report: per round the plan and the
test accuracy of the refined arm and of its equal-budget uniform control, and the worst class
before and after.

The worst class is chosen on validation (the class the first plan found weakest in the
synthetic arm); its before/after figures are test accuracies, read once by `eval_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # report.py lists this section: importing it here at load time would be a cycle
    from synthfactory.ops.evaluation.report import ReportSection


def refinement_summary(plans: Sequence[dict[str, Any]], refined: Sequence[dict[str, Any]],
                       uniform: Sequence[dict[str, Any]], base_per_class: Sequence[float],
                       names: Sequence[str], base_arm: str = "synthetic") -> dict[str, Any]:
    """The `refinement` block of metrics.json.

    `plans` are the rounds' plan.json, `refined`/`uniform` each round's test results
    (`evaluate_classifiers` plus `n_train`), `base_per_class` the base arm's per-class test
    accuracy.
    """
    rounds = []
    for plan, ref, uni in zip(plans, refined, uniform, strict=True):
        rounds.append({
            "round": plan["round"], "evaluated_arm": plan["evaluated_arm"],
            "budget": plan["budget"],
            "val_accuracy": plan["val_accuracy"],
            "allocation": {c["name"]: c["images"] for c in plan["classes"]},
            "changes": {c["name"]: c["changes"] for c in plan["classes"] if c["images"]},
            "guidance": {c["name"]: c["recipe"]["guidance"] for c in plan["classes"]
                         if c["images"]},
            "why": {c["name"]: c["why"] for c in plan["classes"]},
            **{arm: {key: result[key] for key in ("n_train", "accuracy_mean", "accuracy_std",
                                                   "accuracies", "per_class_accuracy")}
               for arm, result in (("refined", ref), ("uniform", uni))},
        })
    first = plans[0]["classes"]
    worst = min(first, key=lambda c: (c["evidence"]["val_accuracy"], c["class_id"]))
    index = worst["class_id"]
    return {
        "base_arm": base_arm, "split_for_plans": "val", "rounds": rounds,
        "worst_class": {"name": names[index], "chosen_on": "val",
                        "val_accuracy": worst["evidence"]["val_accuracy"],
                        "before": base_per_class[index],
                        "after": refined[-1]["per_class_accuracy"][index],
                        "uniform_after": uniform[-1]["per_class_accuracy"][index]},
    }


def _cell(value: float | None) -> str:
    """A per-class test accuracy; a class the test split lacks has none."""
    from synthfactory.ops.evaluation.report import NO_TEST_IMAGES

    return NO_TEST_IMAGES if value is None else f"{value:.3f}"


def refinement_section(metrics: dict[str, Any],
                       grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The loop: per round refined vs uniform, per class before/after, the worst class."""
    from synthfactory.ops.evaluation.report import Paragraph, ReportSection, Table

    loop = metrics.get("refinement")
    if not loop:
        return None
    names = metrics["classes"]
    base = metrics["arms"][loop["base_arm"]]
    blocks: list = [Paragraph(
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
                     _cell(base["per_class_accuracy"][index]),
                     _cell(last["refined"]["per_class_accuracy"][index]),
                     _cell(last["uniform"]["per_class_accuracy"][index])])
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
