"""What `eval_report` gathers from the store and the Dagster instance: every arm's scores, the
scaling points, the image grids, and each asset's wall time for the cost table."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import numpy as np

from synthfactory.ops.data.real_images import read_image_shape, read_split
from synthfactory.ops.evaluation.arms import (ARMS, GROUPS, HISTORY_JSON, SCALING_ASSET,
                                              distilled_arm, grid_samples, retrieved_arm)
from synthfactory.ops.evaluation.cost import AssetCost
from synthfactory.ops.evaluation.evaluate import (Split, checkpoints, evaluate_classifiers,
                                                  zero_shot_row)
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

# What retrieved_set's summary tells the report about the retrieved arm.
RETRIEVAL_FIELDS = ("pool", "query", "per_class", "pool_size", "shortfall")


def real_splits(store: ArtifactStore) -> tuple[Split, Split]:
    """The real test split (the final numbers) and validation split (what choices read)."""
    real_dir = store.require("real_images")
    test_images, test_labels, test_keys = read_split(real_dir, "test")
    val_images, val_labels, val_keys = read_split(real_dir, "val")
    return (Split(test_images, test_labels, tuple(test_keys)),
            Split(val_images, val_labels, tuple(val_keys)))


def not_built_arms(store: ArtifactStore, arms: list[str]) -> dict[str, str]:
    """arm → why it was not built, for the arms whose classifier asset published a not-built
    record (a class missing from its data, an upstream set not built)."""
    from synthfactory.ops.evaluation.missing import missing_arms

    return missing_arms({arm: store.require(asset) for arm in arms
                         if (asset := ARMS[arm].classifier_asset) is not None})


def score_arms(store: ArtifactStore, runtime: TorchRuntime, arms: list[str], n_classes: int,
               judge_batch_size: int) -> dict[str, dict[str, Any]]:
    """metrics.json's `arms`: each arm's group, test and validation accuracy over its seeds
    (zero_shot: the CLIP judge, no training); the retrieved arm adds its label precision. Arms
    recorded as not built (`not_built_arms`) have no row: the report lists them as missing."""
    test, val = real_splits(store)
    device = runtime.torch_device
    missing = not_built_arms(store, arms)
    rows: dict[str, dict[str, Any]] = {}
    for arm in arms:
        if arm in missing:
            continue
        asset = ARMS[arm].classifier_asset
        if asset is None:  # nothing trained: the CLIP judge itself is the reference
            rows[arm] = zero_shot_row(store.require("judge"), test, val, n_classes, device,
                                      judge_batch_size)
            continue
        directory = store.require(asset)
        history = json.loads((directory / HISTORY_JSON).read_text())
        rows[arm] = {"n_train": history["n_train"],
                     **evaluate_classifiers(checkpoints(directory), test, val, n_classes, device)}
    group_rows(rows)
    if "retrieved" in rows:
        summary = json.loads((store.require("retrieved_set") / SUMMARY_JSON).read_text())
        rows["retrieved"]["label_precision"] = summary["label_precision"]
        rows["retrieved"]["retrieval"] = {key: summary[key] for key in RETRIEVAL_FIELDS}
    return rows


def group_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each row with its arm's group heading (from the registry; 'other' if it is not there)."""
    for arm, row in rows.items():
        row["group"] = GROUPS[ARMS[arm].group] if arm in ARMS else "other"
    return rows


def scaling_metrics(store: ArtifactStore, runtime: TorchRuntime, fractions: list[float],
                    arm_rows: dict[str, dict[str, Any]], n_classes: int,
                    real_images_per_class: float | None,
                    missing: dict[str, str]) -> dict[str, Any]:
    """metrics.json's `scaling`: test accuracy per fraction (1.0 from the filtered arm when it
    was trained), the power-law fit and the real-equivalent; `{"not_built": reason}` when its
    data (the filtered arm's) could not be made."""
    from synthfactory.ops.evaluation.scaling import scaling_curve, scaling_to_train

    if "filtered" in missing:
        return {"not_built": f"the filtered arm was not built: {missing['filtered']}"}
    test, _ = real_splits(store)
    trained: dict[float, dict[str, Any]] = {}
    own = scaling_to_train(fractions, [*arm_rows, *missing])
    if own:
        directory = store.require(SCALING_ASSET)
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
            paths = checkpoints(store.require(SCALING_ASSET) / f"fraction-{fraction:g}")
            accuracies = evaluate_classifiers(paths, test, None, n_classes,
                                              runtime.torch_device)["accuracies"]
        points.append({"fraction": fraction, "n_train": n_train,
                       "images_per_class": n_train / n_classes, "accuracies": accuracies})
    if len({point["n_train"] for point in points}) < 2:  # no curve through one size
        return {"not_built": f"every fraction {fractions} of the filtered set gives "
                             f"{points[0]['images_per_class']:g} images per class: raise "
                             "prompts.images_per_class or loosen filtered_set thresholds"}
    real = arm_rows.get("real")
    return scaling_curve(points, None if real is None else real["accuracy_mean"],
                         real_images_per_class, seed=runtime.seed)


def grids(store: ArtifactStore, class_names: list[str], per_class: int,
          retrieved: bool) -> dict[str, np.ndarray]:
    """Image grids of each set, per class: real, synthetic, kept, rejected, distilled (when
    distilled_set was built) and retrieved (when that arm was measured)."""
    from synthfactory.ops.evaluation.grids import image_grid

    real_dir = store.require("real_images")
    real_images, real_labels, _ = read_split(real_dir, "test")
    # Only the pictured samples are read (the synthetic set may not fit in memory).
    synthetic = grid_samples(store.require("synthetic_shards"), store.require("filtered_set"),
                             per_class, read_image_shape(real_dir))

    def grid(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return image_grid(images, labels, class_names, per_class=per_class)

    found = {
        "real": grid(real_images, real_labels),
        "synthetic": grid(*synthetic["synthetic"]),
        "kept": grid(*synthetic["kept"]),
        "rejected": grid(*synthetic["rejected"]),
    }
    if read_not_built(store.require("distilled_set")) is None:
        distilled = distilled_arm(store.require("distilled_set"))
        found["distilled"] = grid(distilled.images, distilled.labels)
    if retrieved:
        data = retrieved_arm(store.require("retrieved_set"))
        found["retrieved"] = grid(data.images, data.labels)
    return found


def asset_costs(context: dg.AssetExecutionContext, assets: list[str], store: ArtifactStore,
                started: float) -> list[AssetCost]:
    """Each asset's wall seconds (the steps that made its current materialization, every
    partition's, from the Dagster instance; None when the instance has no record) and images
    processed; eval_report's own seconds up to now, last."""
    import time

    rows = [AssetCost(name, _step_seconds(context, name), *_images(store, name))
            for name in assets]
    return [*rows, AssetCost("eval_report", time.perf_counter() - started)]


def _step_seconds(context: dg.AssetExecutionContext, asset: str) -> float | None:
    """The wall seconds of the steps that made what `asset` holds now: its latest
    materialization's step, or for a partitioned asset the distinct steps of each partition's
    latest materialization, summed (a cell of the distillation table is a run of its own).
    None when the instance lacks a record of one of them."""
    instance = context.instance
    key = dg.AssetKey(asset)
    layer = context.job_def.asset_layer
    definition = layer.get(key).partitions_def if layer.has(key) else None
    if definition is None:
        latest = instance.get_latest_materialization_event(key)
        events = [] if latest is None else [latest]
        wanted = 1
    else:
        keys = set(definition.get_partition_keys())
        found: dict[str, Any] = {}
        cursor = None
        while len(found) < len(keys):  # newest first: the first record of a partition is its latest
            page = instance.fetch_materializations(key, limit=1000, cursor=cursor)
            for record in page.records:
                if record.partition_key in keys:
                    found.setdefault(record.partition_key, record.event_log_entry)
            if not page.has_more:
                break
            cursor = page.cursor
        events, wanted = list(found.values()), len(keys)
    if len(events) < wanted or any(not event.step_key for event in events):
        return None
    steps: dict[str, set[str]] = {}
    for event in events:
        steps.setdefault(event.run_id, set()).add(event.step_key)
    seconds = 0.0
    for run_id, step_keys in steps.items():
        stats = instance.get_run_step_stats(run_id, step_keys=sorted(step_keys))
        if len(stats) < len(step_keys) or any(s.start_time is None or s.end_time is None
                                              for s in stats):
            return None
        seconds += sum(float(s.end_time - s.start_time) for s in stats)
    return seconds


def _images(store: ArtifactStore, asset: str) -> tuple[int | None, str]:
    """(images processed, what they were) for the assets where images/s means something."""
    directory = store.path(asset)
    if asset == "synthetic_shards":
        summary = store.path("filtered_set") / SUMMARY_JSON
        if summary.is_file():
            return int(json.loads(summary.read_text())["total"]), "generated"
    if asset.startswith("classifier_") and (directory / HISTORY_JSON).is_file():
        history = json.loads((directory / HISTORY_JSON).read_text())
        seeds = history.get("seeds") or [s for row in history.get("fractions", [])
                                         for s in row["seeds"]]
        seen = [seed.get("samples_seen") for seed in seeds]
        if seen and all(isinstance(n, int) for n in seen):
            return int(sum(seen)), "training samples"
    return None, ""
