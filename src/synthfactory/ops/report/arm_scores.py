"""What the report measures of each arm's classifiers on the real splits: every arm's row of
metrics.json (test and validation accuracy over its seeds), the arms recorded as not built, and
the scaling curve's points. Directories are found through `require` (the store's: an asset
name, then path parts; it names the asset to materialize when one is missing)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.arms import ARMS, GROUPS, SCALING_ASSET, replicated_assets
from synthfactory.ops.evaluation.budgets import EPOCH_PROTOCOLS
from synthfactory.ops.evaluation.comparisons import ArmCorrectness
from synthfactory.ops.evaluation.evaluate import (Split, checkpoints, evaluate_classifiers,
                                                  zero_shot_row)
from synthfactory.ops.evaluation.missing import missing_arms
from synthfactory.ops.evaluation.scaling import scaling_evidence
from synthfactory.ops.evaluation.verdicts import REAL_REPLICATE, arm_correctness
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.training import HISTORY_JSON

Require = Callable[..., Path]
# What retrieved_set's summary tells the report about the retrieved arm.
# `labelled` (the train-split pool's labelled part) and `test_near_copies` (an external pool's
# dropped near-copies of test images) are absent from summaries made before they existed.
RETRIEVAL_FIELDS = ("pool", "query", "per_class", "pool_size", "shortfall", "labelled",
                    "test_near_copies")


def real_splits(real_dir: Path) -> tuple[Split, Split]:
    """The real test split (the final numbers) and validation split (what choices read)."""
    test_images, test_labels, test_keys = read_split(real_dir, "test")
    val_images, val_labels, val_keys = read_split(real_dir, "val")
    return (Split(test_images, test_labels, tuple(test_keys)),
            Split(val_images, val_labels, tuple(val_keys)))


def not_built_arms(require: Require, arms: list[str]) -> dict[str, str]:
    """arm → why it was not built, for the arms whose classifier asset published a not-built
    record (a class missing from its data, an upstream set not built)."""
    return missing_arms({arm: require(asset) for arm in arms
                         if (asset := ARMS[arm].classifier_asset) is not None})


def score_arms(require: Require, device: torch.device, arms: list[str], n_classes: int,
               judge_batch_size: int, replicas: Mapping[str, Require] | None = None
               ) -> tuple[dict[str, dict[str, Any]], dict[str, ArmCorrectness]]:
    """metrics.json's `arms`: each arm's group, test and validation accuracy over its
    classifiers (zero_shot: the CLIP judge, no training), its training budget (steps and
    images seen, from history.json); the retrieved arm adds its label precision. Arms recorded
    as not built (`not_built_arms`) have no row: the report lists them as missing. Also each
    measured arm's correctness on the test images, which the intervals and comparisons
    resample.

    `replicas`: replicate id (r1, …) → that replicate's `require`. An arm trained on generated
    images pools the seeds of every replicate whose classifiers exist (r0 is `require`'s) into
    a (replicates, seeds, test images) array; its row lists the replicates it pooled
    (`replicates`) and each one's training-set size (`n_train_by_replicate`)."""
    test, val = real_splits(require("real_images"))
    missing = not_built_arms(require, arms)
    replicated = set(replicated_assets(arms))
    rows: dict[str, dict[str, Any]] = {}
    correct: dict[str, ArmCorrectness] = {}
    for arm in arms:
        if arm in missing:
            continue
        asset = ARMS[arm].classifier_asset
        if asset is None:  # nothing trained: the CLIP judge itself is the reference
            scored = zero_shot_row(require("judge"), test, val, n_classes, device,
                                   judge_batch_size)
            rows[arm] = scored.row
            correct[arm] = arm_correctness(arm, scored.predictions, test.labels)
            continue
        directories = {"r0": require(asset)}
        if asset in replicated:
            directories.update(replicate_directories(replicas or {}, asset))
        histories = {replicate: json.loads((directory / HISTORY_JSON).read_text())
                     for replicate, directory in directories.items()}
        per_replicate = [checkpoints(directory) for directory in directories.values()]
        seeds = min(len(paths) for paths in per_replicate)  # a full seeds × replicates grid
        scored = evaluate_classifiers([path for paths in per_replicate for path in paths[:seeds]],
                                      test, val, n_classes, device)
        history = histories["r0"]
        rows[arm] = {"n_train": history["n_train"], **budget_entry(arm, history), **scored.row}
        ids = list(directories)
        if asset in replicated:  # `accuracies` lists every classifier, replicate by replicate
            rows[arm].update(seeds=seeds, classifiers=len(ids) * seeds, replicates=ids,
                             n_train_by_replicate={
                replicate: record["n_train"] for replicate, record in histories.items()})
        predictions = scored.predictions.reshape(len(ids), seeds, -1)
        correct[arm] = arm_correctness(arm, predictions, test.labels,
                                       ids if asset in replicated else None)
    group_rows(rows)
    if "retrieved" in rows:
        summary = json.loads((require("retrieved_set") / SUMMARY_JSON).read_text())
        rows["retrieved"]["label_precision"] = summary["label_precision"]
        rows["retrieved"]["retrieval"] = {key: summary.get(key) for key in RETRIEVAL_FIELDS}
    return rows, correct


def replicate_directories(replicas: Mapping[str, Require], asset: str) -> dict[str, Path]:
    """replicate id → the directory of `asset` in that replicate, for the replicates that made
    it (the report aggregates what exists: a replicate not yet materialized, or whose arm was
    recorded as not built, is left out and `replicate_status` says so)."""
    found = {}
    for replicate, replica_require in replicas.items():
        try:
            directory = replica_require(asset)
        except FileNotFoundError:  # not materialized (yet): reported by replicate_status
            continue
        if read_not_built(directory) is None:
            found[replicate] = directory
    return found


def replicate_status(replicas: Mapping[str, Require], arms: list[str],
                     rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """metrics.json's `replicates`: how many were asked, which each replicated arm pooled, and
    those missing (not materialized, or the arm not built in that replicate)."""
    asked = ["r0", *replicas]
    pooled = {arm: row["replicates"] for arm, row in rows.items() if "replicates" in row}
    return {"asked": len(asked), "ids": asked, "pooled": pooled,
            "missing": {arm: [r for r in asked if r not in ids] for arm, ids in pooled.items()
                        if len(ids) < len(asked)},
            "replicated": [asset for asset in replicated_assets(arms)
                           if not asset.startswith("classifier_")]}


def budget_entry(arm: str, history: dict[str, Any]) -> dict[str, Any]:
    """An arm row's training budget from its history.json: the steps and images seen that its
    seeds ran (equal across compared arms under `classifiers.budget: equal_steps`), the policy
    and why (an arm trained by the distillation protocol says so)."""
    seeds = history.get("seeds", [])
    budget = history.get("budget") or (
        {"policy": "epochs", "reason": f"{EPOCH_PROTOCOLS[arm]} fixes its epochs "
                                       "(distilled_set.eval), so its steps follow its size, not "
                                       "the compared arms'"} if arm in EPOCH_PROTOCOLS else {})
    # The distillation protocol's networks record steps but not the images they drew.
    return {"steps": seeds[0].get("steps") if seeds else None,
            "images_seen": seeds[0].get("samples_seen") if seeds else None,
            "budget_policy": budget.get("policy"), "budget_reason": budget.get("reason")}


def group_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each row with its arm's group heading (from the registry; 'other' if it is not there)."""
    for arm, row in rows.items():
        row["group"] = GROUPS[ARMS[arm].group] if arm in ARMS else "other"
    return rows


def scaling_metrics(require: Require, device: torch.device, seed: int, fractions: list[float],
                    correct: dict[str, ArmCorrectness], arm_rows: dict[str, dict[str, Any]],
                    n_classes: int, missing: dict[str, str]) -> dict[str, Any]:
    """metrics.json's `scaling`: accuracy against images per class for nested subsets of the
    filtered set and of the real train split (1.0 from the filtered / real arm when it was
    trained), each curve's power-law fit when it has the residual degrees of freedom, and the
    exchange rate (how many real images per class the filtered set is worth) with its interval
    (`scaling.scaling_evidence`); `{"not_built": reason}` when the filtered set could not be
    made."""
    if "filtered" in missing:
        return {"not_built": f"the filtered arm was not built: {missing['filtered']}"}
    directory = require(SCALING_ASSET)
    record = read_not_built(directory)
    if record is not None:
        return {"not_built": f"{SCALING_ASSET} was not built: {record['reason']}"}
    test, _ = real_splits(require("real_images"))
    history = json.loads((directory / HISTORY_JSON).read_text())
    curves = {}
    for curve, key, sub in (("filtered", "fractions", ""), ("real", "real_fractions", "real")):
        trained = {row["fraction"]: row for row in history.get(key, [])}
        points = []
        for fraction in fractions:
            if fraction in trained:
                paths = checkpoints(directory / sub / f"fraction-{fraction:g}")
                predictions = evaluate_classifiers(paths, test, None, n_classes,
                                                   device).predictions
                size = trained[fraction]["n_train"] / n_classes
                points.append((size, arm_correctness(
                    f"{curve}@{fraction:g}", predictions, test.labels,
                    (REAL_REPLICATE,) if curve == "real" else None)))
            elif fraction == 1.0 and curve in correct:  # the arm itself (its r0: the subsets
                arm = correct[curve]                   # are drawn from r0's filtered set)
                points.append((arm_rows[curve]["n_train"] / n_classes, ArmCorrectness(
                    f"{curve}@1", arm.correct[:1], arm.replicate_ids[:1])))
        curves[curve] = points
    if len({size for size, _ in curves["filtered"]}) < 2:  # no curve through one size
        return {"not_built": f"the fractions {fractions} of the filtered set give fewer than two "
                             "sizes: raise prompts.images_per_class or loosen filtered_set "
                             "thresholds"}
    real = curves["real"] if len({size for size, _ in curves["real"]}) >= 2 else None
    return scaling_evidence(curves["filtered"], real, seed=seed)
