"""What the refinement loop did, for `metrics.json`: per round the plan, the test (and
validation) accuracy of the four arms of the 2×2 at equal image budget and their paired
comparisons, the last round's cells and verdicts, and the worst class before and after (the
report's section on it is `ops/report/refinement.py`).

The worst class is chosen on validation (the class the first plan found weakest in the
synthetic arm); its before/after figures are test accuracies, read once by `eval_report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synthfactory.ops.refinement.factorial import targeting_credit
from synthfactory.ops.refinement.plan import LOOP_ARMS, REFINED, UNIFORM

ARM_KEYS = ("n_train", "accuracy_mean", "accuracy_std", "accuracies", "per_class_accuracy",
            "val_accuracy_mean", "val_accuracy_std")


def refinement_summary(plans: Sequence[dict[str, Any]],
                       results: Mapping[str, Sequence[dict[str, Any]]],
                       comparisons: Sequence[list[dict[str, Any]]],
                       base_per_class: Sequence[float], names: Sequence[str],
                       base_arm: str = "synthetic") -> dict[str, Any]:
    """The `refinement` block of metrics.json.

    `plans` are the rounds' plan.json, `results[arm]` each round's results of one arm of
    `LOOP_ARMS` (`evaluate_classifiers` on test plus `n_train` and the validation figures),
    `comparisons` each round's `loop_comparisons`, `base_per_class` the base arm's per-class
    test accuracy. `cells` and `comparisons` at the top are the last round's.
    """
    rounds = []
    for index, (plan, compared) in enumerate(zip(plans, comparisons, strict=True)):
        rounds.append({
            "round": plan["round"], "evaluated_arm": plan["evaluated_arm"],
            "budget": plan["budget"],
            "val_accuracy": plan["val_accuracy"],
            "allocation": {c["name"]: c["images"] for c in plan["classes"]},
            "changes": {c["name"]: c["changes"] for c in plan["classes"] if c["images"]},
            "guidance": {c["name"]: c["recipe"]["guidance"] for c in plan["classes"]
                         if c["images"]},
            "why": {c["name"]: c["why"] for c in plan["classes"]},
            "arms_per_class": plan.get("arms", {}),
            **{arm: {key: results[arm][index][key] for key in ARM_KEYS if key in
                     results[arm][index]} for arm in LOOP_ARMS},
            "comparisons": compared,
        })
    last = rounds[-1]
    first = plans[0]["classes"]
    worst = min(first, key=lambda c: (c["evidence"]["val_accuracy"], c["class_id"]))
    index = worst["class_id"]
    return {
        "base_arm": base_arm, "split_for_plans": "val", "design": design(),
        "cells": {arm: {"allocation": allocation, "recipe": recipe,
                        **{key: last[arm][key] for key in ("n_train", "accuracy_mean",
                                                           "accuracy_std", "val_accuracy_mean",
                                                           "val_accuracy_std") if key in last[arm]}}
                  for arm, (allocation, recipe) in LOOP_ARMS.items()},
        "comparisons": last["comparisons"],
        "targeting": targeting_credit(last["comparisons"]),
        "rounds": rounds,
        "worst_class": {"name": names[index], "chosen_on": "val",
                        "val_accuracy": worst["evidence"]["val_accuracy"],
                        "before": base_per_class[index],
                        "after": results[REFINED][-1]["per_class_accuracy"][index],
                        "uniform_after": results[UNIFORM][-1]["per_class_accuracy"][index],
                        "after_by_arm": {arm: results[arm][-1]["per_class_accuracy"][index]
                                         for arm in LOOP_ARMS}},
    }


def design() -> str:
    """The 2×2 in one sentence (metrics.json says what its cells are)."""
    return ("2×2 at equal image budget: allocation (targeted: the plan's; uniform) × recipe (the "
            "plan's; the base). refined = targeted + plan, targeted_base = targeted + base, "
            "uniform_plan = uniform + plan (a class the plan gave no images gets the plan's recipe "
            "change applied to its own recipe), uniform = uniform + base. Targeting is credited "
            "only by targeted − uniform at the same recipe.")
