"""The classifiers of the evaluation: one `classifier_<arm>` per arm that trains, and
`classifier_scaling`.

Which assets exist follows `classifiers.arms` and the arm registry (ops/evaluation/arms.py): a
`classifier_<arm>` per arm that trains, and `classifier_scaling` when `eval_report.scaling` has
fractions below 1. `eval_report` (assets/report.py) depends on exactly those (and on
`retrieved_set`, a curation asset, when the `retrieved` arm is asked for).
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS, gpu_op_tags
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.data.real_images import read_classes, read_image_shape, read_split
from synthfactory.ops.evaluation.arms import (ARMS, SCALING_ASSET, Arm, TrainingData, check_arms,
                                              filtered_arm, filtered_shard_set, real_arm,
                                              synthetic_shard_set)
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.training.shardsets import ShardSet, real_shard_set
from synthfactory.params import Params
from synthfactory.asset_inputs import classifier_budgets
from synthfactory.publishing import not_built_result, path_md, placement
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


def _image_shape(store: ArtifactStore) -> tuple[int, int, int]:
    return read_image_shape(store.require("real_images"))


# The arms whose sets are shards on disk: their classifiers read them as shard sets (loaded when
# small, streamed above `runtime.in_memory_mb`, dealt to ranks under DDP). The other arms
# (retrieved, mixed) are assembled in memory by their registry `load`.
SHARD_SETS: dict[str, Callable[[ArtifactStore], ShardSet]] = {
    "real": lambda store: real_shard_set(store.require("real_images")),
    "synthetic": lambda store: synthetic_shard_set(store.require("synthetic_shards"),
                                                   _image_shape(store)),
    "filtered": lambda store: filtered_shard_set(store.require("synthetic_shards"),
                                                 store.require("filtered_set"),
                                                 _image_shape(store)),
}


def build_classifier(arm: Arm, devices: int = 1) -> dg.AssetsDefinition:
    """The `classifier_<arm>` asset: `n_seeds` classifiers trained from scratch on one arm, on
    `devices` devices for a shard-set arm (its Kubernetes pod asks for that many GPUs)."""
    if arm.load is None or arm.trained_by != "evaluation":
        raise ValueError(f"arm {arm.name!r} has no classifier_{arm.name} of this module")
    shard_set_of = SHARD_SETS.get(arm.name)

    @dg.asset(name=f"classifier_{arm.name}", group_name="evaluation",
              kinds={"pytorch", "safetensors"}, code_version="3", pool="gpu",
              op_tags=gpu_op_tags(devices if shard_set_of else 1),
              deps=sorted({*arm.upstream, "real_images"}),
              description=f"Classifiers trained from scratch on the {arm.name} arm "
                          f"({', '.join(arm.upstream)}): {arm.question}. One per seed, with "
                          "standard augmentation: `seed-<k>.safetensors` and `history.json`. "
                          "All arms share one architecture, recipe and seeds, so their "
                          "accuracies on the real test split compare the data alone. Shard "
                          "sets above `runtime.in_memory_mb` stream from their shards; with "
                          "`runtime.devices` > 1 they train with DDP (torchrun). An arm whose "
                          "data cannot be made (a class missing, an upstream set not built) "
                          "is published as not built, with the reason.")
    def classifier(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                   runtime: TorchRuntime) -> dg.MaterializeResult:
        from synthfactory.ops.evaluation.arm_training import train_arm  # deferred: torch

        class_names = read_classes(store.require("real_images"))
        label = f"classifier_{arm.name}"
        try:
            data = _arm_data(arm, shard_set_of, store, class_names)
        except TooFewImages as error:
            # Degrade, don't discard: this arm is reported as missing, every other one is made.
            passed_on = next((name for name in arm.upstream
                              if read_not_built(store.path(name)) is not None), None)
            return not_built_result(context, store, label, str(error), passed_on)
        with store.publish_dir(label) as directory:
            history = train_arm(arm.name, data, len(class_names), params.classifiers,
                                placement(runtime), directory, label, store.path(".ddp", label),
                                context.log.info, classifier_budgets(params, store)[arm.name],
                                val=_control_val(arm, store))
        return dg.MaterializeResult(metadata={
            "path": path_md(store, label), "n_train": history["n_train"],
            "seeds": params.classifiers.n_seeds, "sources": len(history["sources"]),
            "architecture": params.classifiers.architecture, "streamed": history["streamed"],
            "devices": history["devices"],
            "train_seconds": round(sum(h["seconds"] for h in history["seeds"]), 1),
        })

    return classifier


def _control_val(arm: Arm, store: ArtifactStore) -> tuple[Any, Any] | None:
    """The validation split for the real arm's longer-trained control (classifiers.
    control_steps); None for every other arm."""
    if arm.name != "real":
        return None
    images, labels, _ = read_split(store.require("real_images"), "val")
    return images, labels


def _arm_data(arm: Arm, shard_set_of: Callable[[ArtifactStore], ShardSet] | None,
              store: ArtifactStore, class_names: list[str]) -> TrainingData | ShardSet:
    """An arm's training set: assembled in memory (one device) by its registry `load`, or its
    shard set; TooFewImages when a class is missing from it."""
    if shard_set_of is None:  # assembled in memory: one device
        assert arm.load is not None
        data: TrainingData | ShardSet = arm.load(store.require)
        labels = data.labels
    else:
        data = shard_set_of(store)
        labels = data.labels()  # labels only: no image is decoded for the check
    check_every_class(labels, class_names, f"the {arm.name} arm", arm.missing_class_fix)
    return data


def build_classifier_scaling() -> dg.AssetsDefinition:
    """`classifier_scaling`: classifiers on nested, seeded subsets of the filtered set and of
    the real train split (the two scaling curves)."""

    @dg.asset(name=SCALING_ASSET, group_name="evaluation", kinds={"pytorch", "safetensors"},
              code_version="2", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["synthetic_shards", "filtered_set", "real_images"])
    def classifier_scaling(context: dg.AssetExecutionContext, params: Params,
                           store: ArtifactStore, runtime: TorchRuntime) -> dg.MaterializeResult:
        """Classifiers on nested, seeded subsets of each class's filtered images and of each
        class's real training images (the fractions of `eval_report.scaling`; 1.0 is the
        filtered or real arm itself when it is configured), `n_seeds` each, with the compared
        arms' recipe, steps and seeds: `fraction-<f>/` and `real/fraction-<f>/`
        `seed-<k>.safetensors`, `history.json`. The report fits each curve and prices the
        synthetic set in real images per class."""
        # deferred: torch
        from synthfactory.ops.evaluation.arm_training import train_scaling_curves

        class_names = read_classes(store.require("real_images"))
        try:  # the curve's subsets are the filtered arm's data: it degrades with that arm
            data = filtered_arm(store.require("synthetic_shards"), store.require("filtered_set"))
            check_every_class(data.labels, class_names, "the filtered set (scaling curve)",
                              ARMS["filtered"].missing_class_fix)
        except TooFewImages as error:
            return not_built_result(context, store, SCALING_ASSET, str(error))
        curves = {"filtered": data, "real": real_arm(store.require("real_images"))}
        with store.publish_dir(SCALING_ASSET) as directory:
            rows = train_scaling_curves(
                curves, params.eval_report.scaling, params.classifiers.arms, len(class_names),
                params.classifiers, placement(runtime), directory, SCALING_ASSET,
                context.log.info, classifier_budgets(params, store)["reference"],
                seed=derive_seed(runtime.seed, SCALING_ASSET))
        return dg.MaterializeResult(metadata={
            "path": path_md(store, SCALING_ASSET),
            "fractions": dg.MetadataValue.json({curve: {f"{r['fraction']:g}": r["n_train"]
                                                        for r in curve_rows}
                                                for curve, curve_rows in rows.items()}),
            "train_seconds": round(sum(h["seconds"] for curve_rows in rows.values()
                                       for r in curve_rows for h in r["seeds"]), 1)})

    return classifier_scaling


def evaluation_assets(params: Params, devices: int = 1) -> list[dg.AssetsDefinition]:
    """The classifier assets `classifiers.arms` and `eval_report.scaling` ask for; the
    shard-set arms' classifiers train on `devices` devices.

    Checks the arm names against the registry here (a ValueError naming them): params import
    nothing from ops.
    """
    arms = check_arms(params.classifiers.arms, judge_backend=params.judge.backend,
                      floors=params.eval_report.accuracy_floor)
    assets = [build_classifier(ARMS[arm], devices) for arm in arms
              if ARMS[arm].trained_by == "evaluation"]
    if params.eval_report.scaling:  # the real curve needs its subsets even at [.., 1.0]
        assets.append(build_classifier_scaling())
    return assets
