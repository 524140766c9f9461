"""The closed loop's results for the report: the last round's four arms as rows of metrics.json's
`arms` (test split, with their validation accuracy beside), and its `refinement` block (every
round's 2×2 and its paired comparisons)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.comparisons import arm_interval
from synthfactory.ops.refinement.arms import evaluate_classifiers
from synthfactory.ops.refinement.factorial import loop_comparisons, loop_correctness
from synthfactory.ops.refinement.plan import LOOP_ARMS, PLAN_JSON
from synthfactory.ops.refinement.rounds import round_name
from synthfactory.ops.refinement.summary import refinement_summary
from synthfactory.ops.training import HISTORY_JSON


def refinement_results(rounds: int, require: Callable[..., Path], device: torch.device,
                       test_images: np.ndarray, test_labels: np.ndarray, names: list[str],
                       base_per_class: list[float]) -> tuple[dict, dict]:
    """For `eval_report`: the last round's arms of the 2×2 (test results, as rows of `arms`)
    and the `refinement` block of metrics.json (every round's cells and comparisons, the worst
    class). Each arm's validation accuracy is added beside its test figures (the plan chose on
    validation; the report's numbers are test)."""
    val_images, val_labels, _ = read_split(require("real_images"), "val")
    plans, results = [], {arm: [] for arm in LOOP_ARMS}
    comparisons = []
    for round_index in range(1, rounds + 1):
        plan_dir = require(round_name("refinement_plan", round_index))
        plans.append(json.loads((plan_dir / PLAN_JSON).read_text()))
        predictions = {}
        for arm, rows in results.items():
            directory = require(round_name(f"classifier_{arm}", round_index))
            row = evaluate_classifiers(directory, test_images, test_labels, len(names), device)
            predictions[arm] = row.pop("predictions")
            val = evaluate_classifiers(directory, val_images, val_labels, len(names), device)
            history = json.loads((directory / HISTORY_JSON).read_text())
            seeds = history.get("seeds") or [{}]
            # The 2×2's arms train the same steps (the compared arms'): each row says how many.
            rows.append({"n_train": history["n_train"], "steps": seeds[0].get("steps"),
                         "images_seen": seeds[0].get("samples_seen"), **row,
                         "val_accuracy_mean": val["accuracy_mean"],
                         "val_accuracy_std": val["accuracy_std"],
                         "val_accuracies": val["accuracies"]})
        correctness = loop_correctness(predictions, test_labels)
        comparisons.append(loop_comparisons(correctness))
        for arm, arm_correctness in correctness.items():  # each arm's own 95% interval
            interval = arm_interval(arm_correctness)
            results[arm][-1].update(ci95=interval["ci95"], ci95_covers=interval["covers"])
    summary = refinement_summary(plans, results, comparisons, base_per_class, names)
    return {arm: rows[-1] for arm, rows in results.items()}, summary
