"""The closed loop's results on the test split, for the report: the last round's refined and
uniform arms as rows of metrics.json's `arms`, and its `refinement` block."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from synthfactory.ops.refinement.plan import PLAN_JSON, REFINED, UNIFORM
from synthfactory.ops.refinement.arms import evaluate_classifiers
from synthfactory.ops.refinement.summary import refinement_summary
from synthfactory.ops.refinement.rounds import round_name
from synthfactory.ops.training import HISTORY_JSON


def refinement_results(rounds: int, require: Callable[..., Path], device: torch.device,
                       test_images: np.ndarray, test_labels: np.ndarray, names: list[str],
                       base_per_class: list[float]) -> tuple[dict, dict]:
    """For `eval_report`: the last round's refined and uniform arms (test results, as rows of
    `arms`) and the `refinement` block of metrics.json (every round, the worst class)."""
    plans, results = [], {REFINED: [], UNIFORM: []}
    for round_index in range(1, rounds + 1):
        plan_dir = require(round_name("refinement_plan", round_index))
        plans.append(json.loads((plan_dir / PLAN_JSON).read_text()))
        for arm, rows in results.items():
            directory = require(round_name(f"classifier_{arm}", round_index))
            row = evaluate_classifiers(directory, test_images, test_labels, len(names), device)
            history = json.loads((directory / HISTORY_JSON).read_text())
            rows.append({"n_train": history["n_train"], **row})
    summary = refinement_summary(plans, results[REFINED], results[UNIFORM], base_per_class, names)
    return {arm: rows[-1] for arm, rows in results.items()}, summary
