"""What the refinement loop did, for `metrics.json`: per round the plan and the test accuracy of
the refined arm and of its equal-budget uniform control, and the worst class before and after
(the report's section on it is `ops/report/refinement.py`).

The worst class is chosen on validation (the class the first plan found weakest in the
synthetic arm); its before/after figures are test accuracies, read once by `eval_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
