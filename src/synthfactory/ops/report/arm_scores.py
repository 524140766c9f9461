"""What the report measures of each arm's classifiers on the real splits: every arm's row of
metrics.json (test and validation accuracy over its seeds), the arms recorded as not built, and
the scaling curve's points. Directories are found through `require` (the store's: an asset
name, then path parts; it names the asset to materialize when one is missing)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.arms import ARMS, GROUPS, SCALING_ASSET
from synthfactory.ops.evaluation.evaluate import (Split, checkpoints, evaluate_classifiers,
                                                  zero_shot_row)
from synthfactory.ops.evaluation.missing import missing_arms
from synthfactory.ops.evaluation.scaling import scaling_curve, scaling_to_train
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.training import HISTORY_JSON

Require = Callable[..., Path]
# What retrieved_set's summary tells the report about the retrieved arm.
RETRIEVAL_FIELDS = ("pool", "query", "per_class", "pool_size", "shortfall")


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
               judge_batch_size: int) -> dict[str, dict[str, Any]]:
    """metrics.json's `arms`: each arm's group, test and validation accuracy over its seeds
    (zero_shot: the CLIP judge, no training); the retrieved arm adds its label precision. Arms
    recorded as not built (`not_built_arms`) have no row: the report lists them as missing."""
    test, val = real_splits(require("real_images"))
    missing = not_built_arms(require, arms)
    rows: dict[str, dict[str, Any]] = {}
    for arm in arms:
        if arm in missing:
            continue
        asset = ARMS[arm].classifier_asset
        if asset is None:  # nothing trained: the CLIP judge itself is the reference
            rows[arm] = zero_shot_row(require("judge"), test, val, n_classes, device,
                                      judge_batch_size)
            continue
        directory = require(asset)
        history = json.loads((directory / HISTORY_JSON).read_text())
        rows[arm] = {"n_train": history["n_train"],
                     **evaluate_classifiers(checkpoints(directory), test, val, n_classes, device)}
    group_rows(rows)
    if "retrieved" in rows:
        summary = json.loads((require("retrieved_set") / SUMMARY_JSON).read_text())
        rows["retrieved"]["label_precision"] = summary["label_precision"]
        rows["retrieved"]["retrieval"] = {key: summary[key] for key in RETRIEVAL_FIELDS}
    return rows


def group_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each row with its arm's group heading (from the registry; 'other' if it is not there)."""
    for arm, row in rows.items():
        row["group"] = GROUPS[ARMS[arm].group] if arm in ARMS else "other"
    return rows


def scaling_metrics(require: Require, device: torch.device, seed: int, fractions: list[float],
                    arm_rows: dict[str, dict[str, Any]], n_classes: int,
                    real_images_per_class: float | None,
                    missing: dict[str, str]) -> dict[str, Any]:
    """metrics.json's `scaling`: test accuracy per fraction (1.0 from the filtered arm when it
    was trained), the power-law fit and the real-equivalent; `{"not_built": reason}` when its
    data (the filtered arm's) could not be made."""
    if "filtered" in missing:
        return {"not_built": f"the filtered arm was not built: {missing['filtered']}"}
    test, _ = real_splits(require("real_images"))
    trained: dict[float, dict[str, Any]] = {}
    own = scaling_to_train(fractions, [*arm_rows, *missing])
    if own:
        directory = require(SCALING_ASSET)
        record = read_not_built(directory)
        if record is not None:
            return {"not_built": f"{SCALING_ASSET} was not built: {record['reason']}"}
        history = json.loads((directory / HISTORY_JSON).read_text())
        trained = {row["fraction"]: row for row in history["fractions"]}
    points = []
    for fraction in fractions:
        if fraction not in own:  # the filtered arm's classifiers
            n_train, accuracies = arm_rows["filtered"]["n_train"], arm_rows["filtered"]["accuracies"]
        else:
            if fraction not in trained:
                raise FileNotFoundError(f"{SCALING_ASSET} has no classifiers for fraction "
                                        f"{fraction:g}: re-materialize {SCALING_ASSET}")
            n_train = trained[fraction]["n_train"]
            paths = checkpoints(require(SCALING_ASSET) / f"fraction-{fraction:g}")
            accuracies = evaluate_classifiers(paths, test, None, n_classes, device)["accuracies"]
        points.append({"fraction": fraction, "n_train": n_train,
                       "images_per_class": n_train / n_classes, "accuracies": accuracies})
    if len({point["n_train"] for point in points}) < 2:  # no curve through one size
        return {"not_built": f"every fraction {fractions} of the filtered set gives "
                             f"{points[0]['images_per_class']:g} images per class: raise "
                             "prompts.images_per_class or loosen filtered_set thresholds"}
    real = arm_rows.get("real")
    return scaling_curve(points, None if real is None else real["accuracy_mean"],
                         real_images_per_class, seed=seed)
