"""The assembly of `metrics.json`, the report's deterministic record, with the image grids that
the report shows beside it: every arm scored on the real test split, the filter's and the
distillation's summaries, the distillation table, the arms not built, the real data's sizes,
the judge, the lineage (digests of every input), the closed loop's rounds, the scaling curve
and the near-copies of test images among the synthetic ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.data.real_images import MANIFEST_JSON, read_classes
from synthfactory.ops.evaluation.arms import arm_order
from synthfactory.ops.evaluation.class_sizes import data_entry
from synthfactory.ops.evaluation.contamination import GRID, contamination_in_store
from synthfactory.ops.evaluation.distillation_table import (distillation_table, not_built_cells,
                                                             with_dd_ranking)
from synthfactory.ops.evaluation.evaluate import SPREAD
from synthfactory.ops.evaluation.generated_set import MEMORIZATION_GRID, generated_set_metrics
from synthfactory.ops.evaluation.soundness import soundness_warnings
from synthfactory.ops.evaluation.comparisons import arm_interval
from synthfactory.ops.evaluation.verdicts import (MULTIPLICITY_NOTE, arm_comparisons,
                                                  arm_intervals, cell_comparisons)
from synthfactory.ops.refinement.results import refinement_results
from synthfactory.ops.report.arm_scores import (Require, group_rows, not_built_arms,
                                                real_splits, replicate_status, scaling_metrics,
                                                score_arms)
from synthfactory.ops.report.grids import set_grids
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.training.architectures import resolved_width
from synthfactory.ops.training.classifiers import training_settings

# The recipe fields of the classifiers that metrics.json records.
def convnet_width(classifiers: Any, resolution: int) -> dict[str, int]:
    """The ConvNet's width every arm trained at (null: the one the resolution gives), so the
    report names it; the other architectures have fixed widths."""
    if classifiers.architecture != "convnet":
        return {}
    return {"width": resolved_width(classifiers.width, resolution)}


RECIPE_FIELDS = ("batch_size", "learning_rate", "weight_decay", "label_smoothing", "epochs",
                 "min_steps")


@dataclass(frozen=True)
class ReportSettings:
    """What the params fix of the report (ops read no params: the asset fills this in)."""

    arms: list[str]  # the configured arms, in report order
    cells: list[str]  # the distillation table's cells
    classifiers: Any  # the `classifiers` params section (read by attribute)
    few_shot: int | None
    judge_batch_size: int
    refinement_rounds: int
    scaling: list[float]
    grid_per_class: int
    contamination: dict[str, Any]  # the `contamination` section: thresholds, grid pairs
    params_digest: str
    seed: int
    warnings: dict[str, float] = field(default_factory=dict)  # eval_report.warnings: the bounds


def report_metrics(require: Callable[..., Path], scores_dir: Path, settings: ReportSettings,
                   device: torch.device, replicas: Mapping[str, Require] | None = None
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """metrics.json's content and the report's image grids, from the store (`require`: the
    store's, by asset name; `scores_dir`: shard_scores's directory, which may be incomplete;
    `replicas`: replicate id → that replicate's `require`, for the replicates beyond r0)."""
    real_dir = require("real_images")
    class_names = read_classes(real_dir)
    test, _ = real_splits(real_dir)
    arms = settings.arms
    # Arms recorded as not built are listed with their reason; every other one is measured.
    missing = not_built_arms(require, arms)
    arm_rows, correct = score_arms(require, device, arms, len(class_names),
                                   settings.judge_batch_size, replicas)
    table_rows, cell_correct = distillation_table(
        require("classifier_distilled"), require("distilled_set"), settings.cells, test.images,
        test.labels, device)
    filter_summary = _json(require("filtered_set") / SUMMARY_JSON)
    distill_summary = _json(require("distilled_set") / SUMMARY_JSON)
    generator_info = _json(require("generator") / "generator.json")
    judge_info = _json(require("judge") / "judge.json")
    real_manifest = _json(real_dir / MANIFEST_JSON)
    recipe = training_settings(settings.classifiers, device)
    metrics: dict[str, Any] = {
        "dataset": real_manifest["source"],
        "classes": class_names,
        "n_test": sum(real_manifest["counts"]["test"].values()),
        "n_val": sum(real_manifest["counts"]["val"].values()),
        "few_shot": settings.few_shot,
        "classifier": {"architecture": settings.classifiers.architecture,
                       **convnet_width(settings.classifiers, real_manifest["resolution"]),
                       **{key: recipe[key] for key in RECIPE_FIELDS},
                       "precision": recipe["precision"].describe()},
        "spread": SPREAD,
        # The independent draws pooled by the arms trained on generated images.
        "replicates": replicate_status(replicas or {}, arms, arm_rows),
        # Equal compute: the steps every compared arm trained, and why (ops/evaluation/budgets.py).
        "budget": budget_summary(arm_rows),
        "arm_order": arms,  # report order: by group (references, synthetic, combined)
        "arms": arm_rows,
        "filter": {key: value for key, value in filter_summary.items()
                   if key not in {"shard_digests"}},
        # The headline cell's summary less its wall time, and the cells recorded as not
        # built (read from the cells: each is a partition, made in a run of its own).
        "distillation": {**{key: value for key, value in distill_summary.items()
                            if key not in {"seconds"}},
                         "not_built": not_built_cells(require("distilled_set"), settings.cells)},
        # Every cell × architecture of the params' table, with the cell's distillation
        # seconds (from its cell.json) and how its networks trained (from their histories);
        # its interval and DD-Ranking scores are added below.
        "distillation_table": table_rows,
        "missing_arms": missing,
        "data": data_entry(real_manifest["counts"]),
        "judge": {"kind": judge_info["kind"], "val_accuracy": judge_info["val_accuracy"]},
        "lineage": {
            "params_digest": settings.params_digest,
            "seed": settings.seed,
            "real_images_digest": real_manifest["digest"],
            "generator_digest": generator_info["digest"],
            "generator_source": generator_info["source"],
            "shard_digests": filter_summary["shard_digests"],
            # A trained judge has one weights file; a CLIP judge the digest of its directory.
            "judge_digest": judge_info.get("sha256") or judge_info["digest"],
            "distilled_sha256": distill_summary.get("sha256"),  # none: not built
        },
    }
    if settings.refinement_rounds:  # the loop's arms (last round) and every round's results
        loop_arms, metrics["refinement"] = refinement_results(
            settings.refinement_rounds, require, device, test.images, test.labels, class_names,
            arm_rows["synthetic"]["per_class_accuracy"])
        arm_rows.update(group_rows(loop_arms))
        metrics["arm_order"] = arm_order([*arms, *loop_arms])
    if settings.scaling:
        metrics["scaling"] = scaling_metrics(require, device, settings.seed, settings.scaling,
                                             correct, arm_rows, len(class_names), missing)
    # The verdicts: each arm's 95% interval, and every comparison the report makes as a paired
    # difference with its interval (ops/evaluation/verdicts.py).
    for arm, interval in arm_intervals(correct, seed=settings.seed).items():
        arm_rows[arm].update(ci95=interval["ci95"], ci95_covers=interval["covers"])
    for row, cell_correctness in zip(table_rows, cell_correct, strict=True):
        row["ci95"] = arm_interval(cell_correctness, seed=settings.seed)["ci95"]
    # Each cell's DD-Ranking scores: IOR against random, HLR against the whole real set.
    metrics["distillation_table"] = with_dd_ranking(table_rows,
                                                    distill_summary.get("labels", "hard"))
    metrics["comparisons"] = [
        *arm_comparisons(correct, metrics["arm_order"], seed=settings.seed),
        *metrics.get("refinement", {}).get("comparisons", []),
        *cell_comparisons(table_rows, cell_correct, seed=settings.seed)]
    metrics["comparisons_note"] = MULTIPLICITY_NOTE
    metrics["contamination"], contamination_grid = contamination_in_store(
        require("synthetic_shards"), scores_dir, test.images, test.keys, real_dir,
        require("judge"), require("filtered_set"), class_names, device,
        **settings.contamination)
    # What the generator made: fidelity and diversity against its training images, and copies.
    (metrics["generation_quality"], metrics["memorization"], memorization_grid,
     metrics["contamination"]["edit_robust"]) = generated_set_metrics(
        require("synthetic_shards"), real_dir, require("judge"), class_names, device,
        test.images, judge_batch_size=settings.judge_batch_size, few_shot=settings.few_shot,
        seed=settings.seed)
    # What makes this run unsound, each with the number that tripped it (the report opens with
    # them, above the verdicts).
    metrics["warnings"] = soundness_warnings(require, metrics, settings.warnings)
    pictures = set_grids(require, class_names, settings.grid_per_class, "retrieved" in arm_rows)
    pictures[GRID] = contamination_grid
    pictures[MEMORIZATION_GRID] = memorization_grid
    return metrics, pictures


def budget_summary(arm_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """metrics.json's `budget`: the policy, the steps of the compared arms (equal under
    equal_steps) and the sentence that says why; arms on another protocol listed apart."""
    trained = {arm: row for arm, row in arm_rows.items() if row.get("steps") is not None}
    compared = {arm: row for arm, row in trained.items()
                if row.get("budget_policy") == "equal_steps"}
    reason = next((row["budget_reason"] for row in compared.values()), None)
    return {"policy": "equal_steps" if compared else "epochs",
            "steps": sorted({row["steps"] for row in compared.values()}),
            "arms": sorted(compared), "reason": reason,
            "own_schedule": {arm: row.get("budget_reason") for arm, row in trained.items()
                             if arm not in compared}}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
