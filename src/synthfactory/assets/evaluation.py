"""The answer: classifiers trained on each arm, evaluated on real held-out images.

Which assets exist follows `classifiers.arms` and the arm registry (ops/evaluation/arms.py): a
`classifier_<arm>` per arm that trains, `classifier_scaling` when `eval_report.scaling` has
fractions below 1, and `eval_report`, which depends on exactly those (and on `retrieved_set`,
a curation asset, when the `retrieved` arm is asked for).
"""

import base64
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from synthfactory.assets.metadata import not_built_result
from synthfactory.executors import GPU_OP_TAGS, gpu_op_tags
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.data.real_images import MANIFEST_JSON, read_classes, read_image_shape
from synthfactory.ops.evaluation.arms import (ARMS, HISTORY_JSON, SCALING_ASSET, Arm,
                                              TrainingData, arm_order, check_arms, filtered_arm,
                                              filtered_shard_set, synthetic_shard_set)
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import atomic_dir, dumps_json, sha256_file
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.training.shardsets import ShardSet, real_shard_set
from synthfactory.params import ClassifiersParams, Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


def training_settings(config: ClassifiersParams, device: Any) -> dict[str, Any]:
    """`train_classifier` keyword arguments (data, seed and device aside) for `classifiers`:
    the architecture's recipe with the section's overrides, the precision plan of the device,
    steps and augmentation. Every classifier asset and benchmark trains through this."""
    import torch

    from synthfactory.ops.training.recipes import precision_plan, recipe_for

    recipe = recipe_for(config.architecture, learning_rate=config.learning_rate,
                        batch_size=config.batch_size, weight_decay=config.weight_decay,
                        label_smoothing=config.label_smoothing)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return {"epochs": config.epochs, "min_steps": config.min_steps,
            "batch_size": recipe.batch_size, "learning_rate": recipe.learning_rate,
            "momentum": recipe.momentum, "weight_decay": recipe.weight_decay,
            "label_smoothing": recipe.label_smoothing, "width": config.width,
            "architecture": config.architecture, "augmentation": config.augmentation,
            "flip": config.flip,
            "precision": precision_plan(config.precision, device.type, bf16_supported=bf16,
                                        channels_last=config.channels_last)}


def train_seeds(context: dg.AssetExecutionContext, config: ClassifiersParams, data: Any,
                 n_classes: int, runtime: TorchRuntime, directory: Path, label: str
                 ) -> list[dict[str, Any]]:
    """`n_seeds` classifiers on one training set, saved as `seed-<k>.safetensors` in
    `directory`; the same seeds for every arm, so arms differ by their data alone."""
    from synthfactory.ops.training.train import ClassifierSettings, save_classifier, train_classifier

    settings = training_settings(config, runtime.torch_device)
    histories = []
    directory.mkdir(parents=True, exist_ok=True)
    for seed_index in range(config.n_seeds):
        model, history = train_classifier(
            data.images, data.targets, n_classes, ClassifierSettings(**settings),
            seed=derive_seed(runtime.seed, "classifiers", seed_index),
            device=runtime.torch_device)
        save_classifier(directory / f"seed-{seed_index}.safetensors", model)
        histories.append({"seed_index": seed_index, **history})
        context.log.info(f"{label} seed {seed_index}: {history['steps']} steps, train accuracy "
                         f"{history['train_accuracy']:.3f}")
    return histories


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
    load = arm.load
    shard_set_of = SHARD_SETS.get(arm.name)

    @dg.asset(name=f"classifier_{arm.name}", group_name="evaluation",
              kinds={"pytorch", "safetensors"}, code_version="2", pool="gpu",
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
        class_names = read_classes(store.require("real_images"))
        n_classes = len(class_names)
        label = f"classifier_{arm.name}"
        data: TrainingData | None = None
        shard_set: ShardSet | None = None
        try:
            if shard_set_of is None:  # assembled in memory: one device
                data = load(store.require)
                labels = data.labels
            else:
                shard_set = shard_set_of(store)
                labels = shard_set.labels()  # labels only: no image is decoded for the check
            check_every_class(labels, class_names, f"the {arm.name} arm", arm.missing_class_fix)
        except TooFewImages as error:
            # Degrade, don't discard: this arm is reported as missing, every other one is made.
            passed_on = next((name for name in arm.upstream
                              if read_not_built(store.path(name)) is not None), None)
            return not_built_result(context, store, label, str(error), passed_on)
        with store.publish_dir(label) as directory:
            if shard_set is None:  # assembled in memory: one device
                assert data is not None
                histories = train_seeds(context, params.classifiers, data, n_classes, runtime,
                                         directory, label)
                record = {"n_train": len(data.images), "sources": data.sources,
                          "soft_labels": data.targets.ndim == 2, "streamed": False,
                          "devices": 1}
            else:
                histories, streamed = _train_shard_set(context, params.classifiers, shard_set,
                                                       n_classes, runtime, store, directory,
                                                       label)
                record = {"n_train": shard_set.n_samples,
                          "sources": [shard.path.name for shard in shard_set.shards],
                          "soft_labels": shard_set.soft, "streamed": streamed,
                          "devices": runtime.devices}
            (directory / HISTORY_JSON).write_text(dumps_json({
                "arm": arm.name, **record, "seeds": histories}))
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path(label))),
            "n_train": record["n_train"], "seeds": params.classifiers.n_seeds,
            "sources": len(record["sources"]), "architecture": params.classifiers.architecture,
            "streamed": record["streamed"], "devices": record["devices"],
            "train_seconds": round(sum(h["seconds"] for h in histories), 1),
        })

    return classifier


def _train_shard_set(context: dg.AssetExecutionContext, config: ClassifiersParams,
                     shard_set: ShardSet, n_classes: int, runtime: TorchRuntime,
                     store: ArtifactStore, directory: Path, label: str
                     ) -> tuple[list[dict[str, Any]], bool]:
    """`n_seeds` classifiers on a shard set (loaded, streamed, or with DDP on
    `runtime.devices` processes); the histories and whether the set was streamed."""
    from synthfactory.ops.training.train import ClassifierSettings, save_classifier, train_classifier

    settings = training_settings(config, runtime.torch_device)
    seeds = [derive_seed(runtime.seed, "classifiers", index) for index in range(config.n_seeds)]
    streamed = runtime.devices > 1 or shard_set.decoded_mib > runtime.in_memory_mb
    if runtime.devices > 1:
        return _train_ddp(context, store, runtime, shard_set, label, n_classes, seeds, settings,
                          directory), streamed
    source = shard_set.source(in_memory_mb=runtime.in_memory_mb, seed=0,
                              workers=runtime.workers, shuffle_buffer=runtime.shuffle_buffer)
    histories = []
    for seed_index, seed in enumerate(seeds):
        if streamed:
            source = source.with_seed(derive_seed(seed, "stream"))
        model, history = train_classifier(source, None, n_classes, ClassifierSettings(**settings),
                                          seed=seed, device=runtime.torch_device)
        save_classifier(directory / f"seed-{seed_index}.safetensors", model)
        histories.append({"seed_index": seed_index, **history})
        context.log.info(f"{label} seed {seed_index}: {history['steps']} steps, train accuracy "
                         f"{history['train_accuracy']:.3f}")
    return histories, streamed


def _train_ddp(context: dg.AssetExecutionContext, store: ArtifactStore, runtime: TorchRuntime,
               shard_set: ShardSet, label: str, n_classes: int, seeds: list[int],
               settings: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    """Every seed trained with DDP on `runtime.devices` processes launched by torchrun."""
    from synthfactory.ops.training.distributed import Recipe, train_distributed, write_job

    work = store.path(".ddp", label)
    shutil.rmtree(work, ignore_errors=True)
    plan = settings["precision"]
    recipe = Recipe(**{key: value for key, value in settings.items() if key != "precision"},
                    autocast=plan.autocast, channels_last=plan.channels_last)
    job = write_job(work, shard_set, n_classes=n_classes, seeds=seeds,
                    stream_seeds=[derive_seed(seed, "stream") for seed in seeds],
                    recipe=recipe, workers=runtime.workers,
                    shuffle_buffer=runtime.shuffle_buffer, out_dir=directory,
                    threads=runtime.threads, deterministic=runtime.deterministic)
    context.log.info(f"{label}: DDP on {runtime.devices} processes (torchrun)")
    histories = train_distributed(job, devices=runtime.devices, log=context.log.info)
    shutil.rmtree(work, ignore_errors=True)
    return [{"seed_index": index, **history} for index, history in enumerate(histories)]


def build_classifier_scaling() -> dg.AssetsDefinition:
    """`classifier_scaling`: classifiers on nested, seeded subsets of the filtered set."""

    @dg.asset(name=SCALING_ASSET, group_name="evaluation", kinds={"pytorch", "safetensors"},
              code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["synthetic_shards", "filtered_set", "real_images"])
    def classifier_scaling(context: dg.AssetExecutionContext, params: Params,
                           store: ArtifactStore, runtime: TorchRuntime) -> dg.MaterializeResult:
        """Classifiers on nested, seeded subsets of each class's filtered images (the fractions
        of `eval_report.scaling` below 1; 1 is the filtered arm itself), `n_seeds` each, with
        the filtered arm's recipe and seeds: `fraction-<f>/seed-<k>.safetensors`, `history.json`.
        """
        from synthfactory.ops.evaluation.scaling import nested_subsets, scaling_to_train

        # Read here, not when the definitions are built: a run's overrides and DVC's params
        # tracking both see the fractions this asset trains.
        fractions = scaling_to_train(params.eval_report.scaling, params.classifiers.arms)
        class_names = read_classes(store.require("real_images"))
        n_classes = len(class_names)
        try:  # the curve's subsets are the filtered arm's data: it degrades with that arm
            data = filtered_arm(store.require("synthetic_shards"), store.require("filtered_set"))
            check_every_class(data.labels, class_names, "the filtered set (scaling curve)",
                              ARMS["filtered"].missing_class_fix)
        except TooFewImages as error:
            return not_built_result(context, store, SCALING_ASSET, str(error))
        subsets = nested_subsets(data.labels, fractions, derive_seed(runtime.seed, SCALING_ASSET))
        rows = []
        with store.publish_dir(SCALING_ASSET) as directory:
            for fraction, chosen in subsets.items():
                subset = TrainingData(data.images[chosen], data.labels[chosen],
                                      data.targets[chosen], [data.keys[i] for i in chosen],
                                      data.sources)
                histories = train_seeds(context, params.classifiers, subset, n_classes, runtime,
                                         directory / f"fraction-{fraction:g}",
                                         f"{SCALING_ASSET} {fraction:g}")
                rows.append({"fraction": fraction, "n_train": len(chosen),
                             "images_per_class": len(chosen) / n_classes, "seeds": histories})
            (directory / HISTORY_JSON).write_text(dumps_json({"fractions": rows}))
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path(SCALING_ASSET))),
            "fractions": dg.MetadataValue.json({f"{r['fraction']:g}": r["n_train"] for r in rows}),
            "train_seconds": round(sum(h["seconds"] for r in rows for h in r["seeds"]), 1)})

    return classifier_scaling


def evaluation_assets(params: Params, devices: int = 1) -> list[dg.AssetsDefinition]:
    """The assets `classifiers.arms` and `eval_report.scaling` ask for, `eval_report` last;
    the shard-set arms' classifiers train on `devices` devices.

    Checks the arm names against the registry here (a ValueError naming them): params import
    nothing from ops.
    """
    from synthfactory.ops.evaluation.scaling import scaling_to_train

    arms = check_arms(params.classifiers.arms, judge_backend=params.judge.backend,
                      floors=params.eval_report.accuracy_floor)
    assets = [build_classifier(ARMS[arm], devices) for arm in arms
              if ARMS[arm].trained_by == "evaluation"]
    if scaling_to_train(params.eval_report.scaling, params.classifiers.arms):
        assets.append(build_classifier_scaling())
    return [*assets, build_eval_report(params)]


def build_eval_report(config: Params) -> dg.AssetsDefinition:
    """`eval_report`, depending on the classifiers of the configured arms (and scaling)."""
    from synthfactory.ops.evaluation.scaling import scaling_to_train
    arms = arm_order(config.classifiers.arms)
    deps = [asset for arm in arms if (asset := ARMS[arm].classifier_asset) is not None]
    deps += [SCALING_ASSET] if scaling_to_train(config.eval_report.scaling,
                                                config.classifiers.arms) else []
    # The distillation table (every cell) is reported whether or not `distilled` is an arm.
    deps += sorted({"classifier_distilled", "filtered_set", "distilled_set", "generator",
                    "real_images", "judge"} - set(deps))
    deps += ["retrieved_set"] if "retrieved" in arms else []

    @dg.asset(name="eval_report", group_name="evaluation", kinds={"html", "json"},
              code_version="2", pool="gpu", op_tags=GPU_OP_TAGS, deps=deps)
    def eval_report(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                    runtime: TorchRuntime) -> dg.MaterializeResult:
        """The answer: accuracy of every arm on the real test split, mean ± sample std over
        seeds, grouped (references, synthetic, combined) with the difference to real; the
        validation accuracies that choices read; the scaling curve with its power-law fit and
        real-equivalent; the cost of every asset. Also what weakens the answer: the arms that
        were not built and why (`missing_arms`), the real images per class and split with
        imbalance and small-test-class warnings (`data`), and the near-copies of test images
        among the synthetic ones (`contamination`, counted even when zero).

        Writes `metrics.json` (deterministic), `report.md`, a self-contained `report.html`
        and `cost.json` (wall times: kept out of metrics.json and report.md) to
        `eval_report.output_dir`, with lineage: params digest, generator, shard and judge
        digests. The same files are published through the store (`eval_report/` under its
        root, uploaded with a commit on an object store).
        """
        from synthfactory.assets.distillation_common import table
        from synthfactory.assets.report_inputs import (asset_costs, grids, group_rows,
                                                       not_built_arms, real_splits,
                                                       scaling_metrics, score_arms)
        from synthfactory.ops.evaluation.class_sizes import data_entry
        from synthfactory.ops.evaluation.contamination import GRID, contamination_in_store
        from synthfactory.ops.evaluation.cost import COST_JSON, cost_summary
        from synthfactory.ops.report.cost import cost_section
        from synthfactory.ops.evaluation.distillation_table import (distillation_table,
                                                                    not_built_cells)
        from synthfactory.ops.evaluation.evaluate import SPREAD
        from synthfactory.ops.evaluation.missing import missing_arm_lines
        from synthfactory.ops.report.plots import accuracy_plot
        from synthfactory.ops.report.document import write_report
        from synthfactory.ops.report.tables import arm_table_markdown

        started = time.perf_counter()
        real_dir = store.require("real_images")
        class_names = read_classes(real_dir)
        test, _ = real_splits(store)
        # Arms recorded as not built are listed with their reason; every other one is measured.
        missing = not_built_arms(store, arms)
        cells = [cell.key for cell in table(params)]
        arm_rows = score_arms(store, runtime, arms, len(class_names), params.judge.batch_size)
        filter_summary = json.loads((store.require("filtered_set") / SUMMARY_JSON).read_text())
        distill_summary = json.loads((store.require("distilled_set") / SUMMARY_JSON).read_text())
        generator_info = json.loads((store.require("generator") / "generator.json").read_text())
        judge_info = json.loads((store.require("judge") / "judge.json").read_text())
        real_manifest = json.loads((real_dir / MANIFEST_JSON).read_text())
        settings = training_settings(params.classifiers, runtime.torch_device)
        metrics: dict[str, Any] = {
            "dataset": real_manifest["source"],
            "classes": class_names,
            "n_test": sum(real_manifest["counts"]["test"].values()),
            "n_val": sum(real_manifest["counts"]["val"].values()),
            "few_shot": params.real_images.few_shot,
            "classifier": {"architecture": params.classifiers.architecture,
                           **{key: settings[key] for key in (
                               "batch_size", "learning_rate", "weight_decay",
                               "label_smoothing", "epochs", "min_steps")},
                           "precision": settings["precision"].describe()},
            "spread": SPREAD,
            "arm_order": arms,  # report order: by group (references, synthetic, combined)
            "arms": arm_rows,
            "filter": {key: value for key, value in filter_summary.items()
                       if key not in {"shard_digests"}},
            # The headline cell's summary less its wall time, and the cells recorded as not
            # built (read from the cells: each is a partition, made in a run of its own).
            "distillation": {**{key: value for key, value in distill_summary.items()
                                if key not in {"seconds"}},
                             "not_built": not_built_cells(store.require("distilled_set"),
                                                          cells)},
            # Every cell × architecture of the params' table, with the cell's distillation
            # seconds (from its cell.json).
            "distillation_table": distillation_table(
                store.require("classifier_distilled"), store.require("distilled_set"),
                cells, test.images, test.labels, runtime.torch_device),
            "missing_arms": missing,
            "data": data_entry(real_manifest["counts"]),
            "judge": {"kind": judge_info["kind"], "val_accuracy": judge_info["val_accuracy"]},
            "lineage": {
                "params_digest": params.digest(*Params.model_fields),
                "seed": runtime.seed,
                "real_images_digest": real_manifest["digest"],
                "generator_digest": generator_info["digest"],
                "generator_source": generator_info["source"],
                "shard_digests": filter_summary["shard_digests"],
                # A trained judge has one weights file; a CLIP judge the digest of its directory.
                "judge_digest": judge_info.get("sha256") or judge_info["digest"],
                "distilled_sha256": distill_summary.get("sha256"),  # none: not built
            },
        }
        if params.refinement.rounds:  # the loop's arms (last round) and every round's results
            from synthfactory.assets.refinement import refinement_results

            loop_arms, metrics["refinement"] = refinement_results(
                params.refinement, store, runtime.torch_device, test.images, test.labels,
                class_names, arm_rows["synthetic"]["per_class_accuracy"])
            arm_rows.update(group_rows(loop_arms))
            metrics["arm_order"] = arm_order([*arms, *loop_arms])
        if params.eval_report.scaling:
            metrics["scaling"] = scaling_metrics(
                store, runtime, params.eval_report.scaling, arm_rows, len(class_names),
                real_images_per_class=(arm_rows["real"]["n_train"] / len(class_names)
                                       if "real" in arm_rows else None), missing=missing)
        leakage = params.contamination
        metrics["contamination"], contamination_grid = contamination_in_store(
            store.require("synthetic_shards"), store.path("shard_scores"), test.images,
            test.keys, real_dir, store.require("judge"), store.require("filtered_set"),
            class_names, runtime.torch_device, feature_threshold=leakage.feature_threshold,
            pixel_threshold=leakage.pixel_threshold, pixel_resolution=leakage.pixel_resolution,
            grid_pairs=leakage.grid_pairs)
        pictures = grids(store, class_names, params.eval_report.grid_per_class,
                         "retrieved" in arm_rows)
        pictures[GRID] = contamination_grid
        for line in missing_arm_lines(missing):
            context.log.warning(f"eval_report: {line}")
        output = Path(params.eval_report.output_dir)
        # The report depends on every other asset (definitions.build_definitions): price each,
        # in graph order, rather than from a list kept by hand.
        graph = context.job_def.asset_layer.asset_graph
        upstream = context.assets_def.dependency_keys
        costed = [key.to_user_string() for key in graph.toposorted_asset_keys
                  if key in upstream]
        cost = cost_summary(asset_costs(context, costed, store, started),
                            str(runtime.torch_device), gpus=1)
        # Published through the store first (uploaded with its commit when the root is an
        # object store, so other machines and people read the same report), then copied to
        # output_dir.
        with store.publish_dir("eval_report") as directory:
            write_report(directory, metrics, pictures, html_only=[cost_section(cost)])
            (directory / COST_JSON).write_text(dumps_json(cost))
        with atomic_dir(output) as directory:
            shutil.copytree(store.path("eval_report"), directory, dirs_exist_ok=True)
        plot = accuracy_plot(metrics)
        table = arm_table_markdown(metrics)
        context.log.info("eval_report:\n" + table)
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.path(str(output / "report.html")),
                "arms": dg.MetadataValue.md(table),
                "accuracy_plot": dg.MetadataValue.md(
                    f"![accuracy per arm](data:image/png;base64,{base64.b64encode(plot).decode()})"),
                **{f"accuracy_{arm}": dg.MetadataValue.float(round(row["accuracy_mean"], 4))
                   for arm, row in arm_rows.items()},
                "missing_arms": dg.MetadataValue.json(missing),
                "contamination_count": metrics["contamination"]["count"],
                "seconds": round(time.perf_counter() - started, 1),
            },
            data_version=dg.DataVersion(sha256_file(output / "metrics.json")[:16]),
        )

    return eval_report

