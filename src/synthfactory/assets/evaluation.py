"""The answer: classifiers trained on each arm, evaluated on real held-out images."""

import base64
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np

from synthfactory.assets.metadata import not_built_result
from synthfactory.executors import GPU_OP_TAGS, gpu_op_tags
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.data.real_images import MANIFEST_JSON, read_classes, read_image_shape, read_split
from synthfactory.ops.evaluation.arms import (
    TrainingData,
    distilled_arm,
    filtered_arm,
    filtered_shard_set,
    grid_samples,
    real_arm,
    synthetic_arm,
    synthetic_shard_set,
)
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import atomic_dir, dumps_json, sha256_file
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.training.shardsets import ShardSet, real_shard_set
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

HISTORY_JSON = "history.json"

# Each arm: the upstream asset its data comes from, and how to read that data from the store.
ARMS: dict[str, tuple[str, Callable[[ArtifactStore], TrainingData]]] = {
    "real": ("real_images", lambda store: real_arm(store.require("real_images"))),
    "synthetic": ("synthetic_shards",
                  lambda store: synthetic_arm(store.require("synthetic_shards"))),
    "filtered": ("filtered_set", lambda store: filtered_arm(store.require("synthetic_shards"),
                                                            store.require("filtered_set"))),
    "distilled": ("distilled_set", lambda store: distilled_arm(store.require("distilled_set"))),
}


# What to change when an arm lacks a class altogether (it is then recorded as not built).
MISSING_CLASS_FIX = {
    "synthetic": "materialize every shard of synthetic_shards",
    "filtered": "loosen filtered_set thresholds or raise prompts.images_per_class",
}


def _image_shape(store: ArtifactStore) -> tuple[int, int, int]:
    return read_image_shape(store.require("real_images"))


# Each arm as shards: what its classifiers read (loaded when small, streamed otherwise).
SHARD_SETS: dict[str, Callable[[ArtifactStore], ShardSet]] = {
    "real": lambda store: real_shard_set(store.require("real_images")),
    "synthetic": lambda store: synthetic_shard_set(store.require("synthetic_shards"),
                                                   _image_shape(store)),
    "filtered": lambda store: filtered_shard_set(store.require("synthetic_shards"),
                                                 store.require("filtered_set"),
                                                 _image_shape(store)),
}


def build_classifier(arm: str, devices: int = 1) -> dg.AssetsDefinition:
    """The `classifier_<arm>` asset: `n_seeds` ConvNets trained from scratch on one arm, on
    `devices` devices (its Kubernetes pod asks for that many GPUs)."""
    upstream, _ = ARMS[arm]

    @dg.asset(name=f"classifier_{arm}", group_name="evaluation",
              kinds={"pytorch", "safetensors"}, code_version="1", pool="gpu",
              op_tags=gpu_op_tags(devices), deps=[upstream, "real_images"],
              description=f"ConvNets trained from scratch on the {arm} arm ({upstream}), one per "
                          "seed, with standard augmentation: `seed-<k>.safetensors` and "
                          "`history.json`. All arms share one architecture and recipe, so "
                          "their accuracies on the real test split compare the data alone. "
                          "Sets above `runtime.in_memory_mb` stream from their shards; with "
                          "`runtime.devices` > 1 the seeds train with DDP (torchrun). An arm "
                          "whose data cannot be made (a class missing, an upstream set not "
                          "built) is published as not built, with the reason.")
    def classifier(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                   runtime: TorchRuntime) -> dg.MaterializeResult:
        from synthfactory.ops.training.train import save_classifier, train_classifier

        config = params.classifiers
        class_names = read_classes(store.require("real_images"))
        n_classes = len(class_names)
        try:
            shard_set = SHARD_SETS[arm](store)
            # Labels only: the images are not decoded for this check.
            check_every_class(shard_set.labels(), class_names, f"the {arm} arm",
                              MISSING_CLASS_FIX.get(arm, f"rebuild {upstream} with every class"))
        except TooFewImages as error:
            # Degrade, don't discard: this arm is reported as missing, every other one is made.
            passed_on = upstream if read_not_built(store.path(upstream)) else None
            return not_built_result(context, store, f"classifier_{arm}", str(error), passed_on)
        seeds = [derive_seed(runtime.seed, "classifiers", index) for index in range(config.n_seeds)]
        recipe = dict(epochs=config.epochs, min_steps=config.min_steps,
                      batch_size=config.batch_size, learning_rate=config.learning_rate,
                      width=config.width, architecture=config.architecture,
                      augmentation=config.augmentation, flip=config.flip)
        streamed = runtime.devices > 1 or shard_set.decoded_mib > runtime.in_memory_mb
        with store.publish_dir(f"classifier_{arm}") as directory:
            if runtime.devices > 1:
                histories = _train_ddp(context, store, runtime, shard_set, arm, n_classes, seeds,
                                       recipe, directory)
            else:
                source = shard_set.source(in_memory_mb=runtime.in_memory_mb, seed=0,
                                          workers=runtime.workers,
                                          shuffle_buffer=runtime.shuffle_buffer)
                histories = []
                for seed_index, seed in enumerate(seeds):
                    if streamed:
                        source = source.with_seed(derive_seed(seed, "stream"))
                    model, history = train_classifier(source, None, n_classes, seed=seed,
                                                      device=runtime.torch_device, **recipe)
                    save_classifier(directory / f"seed-{seed_index}.safetensors", model)
                    histories.append({"seed_index": seed_index, **history})
                    context.log.info(f"classifier_{arm} seed {seed_index}: {history['steps']} "
                                     f"steps, train accuracy {history['train_accuracy']:.3f}")
            (directory / HISTORY_JSON).write_text(dumps_json({
                "arm": arm, "n_train": shard_set.n_samples,
                "sources": [shard.path.name for shard in shard_set.shards],
                "soft_labels": shard_set.soft, "streamed": streamed, "devices": runtime.devices,
                "seeds": histories}))
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path(f"classifier_{arm}"))),
            "n_train": shard_set.n_samples, "seeds": config.n_seeds,
            "sources": len(shard_set.shards), "streamed": streamed, "devices": runtime.devices,
            "train_seconds": round(sum(h["seconds"] for h in histories), 1),
        })

    return classifier


def _train_ddp(context: dg.AssetExecutionContext, store: ArtifactStore, runtime: TorchRuntime,
               shard_set: ShardSet, arm: str, n_classes: int, seeds: list[int],
               recipe: dict, directory: Path) -> list[dict]:
    """Every seed trained with DDP on `runtime.devices` processes launched by torchrun."""
    import shutil

    from synthfactory.ops.training.distributed import Recipe, train_distributed, write_job

    work = store.path(".ddp", f"classifier_{arm}")
    shutil.rmtree(work, ignore_errors=True)
    job = write_job(work, shard_set, n_classes=n_classes, seeds=seeds,
                    stream_seeds=[derive_seed(seed, "stream") for seed in seeds],
                    recipe=Recipe(**recipe), workers=runtime.workers,
                    shuffle_buffer=runtime.shuffle_buffer, out_dir=directory,
                    threads=runtime.threads)
    context.log.info(f"classifier_{arm}: DDP on {runtime.devices} processes (torchrun)")
    histories = train_distributed(job, devices=runtime.devices, log=context.log.info)
    shutil.rmtree(work, ignore_errors=True)
    return [{"seed_index": index, **history} for index, history in enumerate(histories)]


@dg.asset(group_name="evaluation", kinds={"html", "json"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS,
          deps=[f"classifier_{arm}" for arm in ARMS] + ["filtered_set", "distilled_set",
                                                         "generator", "real_images", "judge"])
def eval_report(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                runtime: TorchRuntime) -> dg.MaterializeResult:
    """The answer: accuracy of every arm on the real test split, mean ± std over seeds.

    Writes `metrics.json`, `report.md` and a self-contained `report.html` (arm table, per-class
    accuracy, confusion matrices, image grids of real / synthetic / kept / rejected / distilled
    images, accuracy plot) to `eval_report.output_dir`, with lineage: params digest, generator
    digest and shard digests. Also what weakens the answer: the arms that were not built and why
    (`missing_arms`), the real images per class and split with imbalance and small-test-class
    warnings (`data`), and the near-copies of test images among the synthetic ones
    (`contamination`, counted even when zero). The same files are published through the store
    (`eval_report/` under its root, uploaded with a commit on an object store).
    """
    from synthfactory.ops.evaluation.class_sizes import data_entry
    from synthfactory.ops.evaluation.contamination import GRID, contamination_in_store
    from synthfactory.ops.evaluation.distillation_table import distillation_table
    from synthfactory.ops.evaluation.metrics import accuracy, confusion_matrix, mean_std, per_class_accuracy
    from synthfactory.ops.evaluation.missing import missing_arm_lines, missing_arms
    from synthfactory.ops.evaluation.plots import accuracy_plot
    from synthfactory.ops.evaluation.report import write_report
    from synthfactory.ops.evaluation.tables import arm_table_markdown
    from synthfactory.ops.training.train import load_classifier, predict_proba

    started = time.perf_counter()
    real_dir = store.require("real_images")
    class_names = read_classes(real_dir)
    n_classes = len(class_names)
    test_images, test_labels, test_keys = read_split(real_dir, "test")
    arms: dict[str, dict] = {}
    # Arms recorded as not built are listed with their reason; every other one is measured.
    missing = missing_arms({arm: store.require(f"classifier_{arm}") for arm in ARMS})
    for arm in ARMS:
        if arm in missing:
            continue
        directory = store.require(f"classifier_{arm}")
        history = json.loads((directory / HISTORY_JSON).read_text())
        accuracies, per_class, confusion = [], [], np.zeros((n_classes, n_classes), np.int64)
        for checkpoint in sorted(directory.glob("seed-*.safetensors")):
            model = load_classifier(checkpoint, runtime.torch_device)
            predicted = predict_proba(model, test_images, device=runtime.torch_device).argmax(1)
            accuracies.append(accuracy(predicted, test_labels))
            per_class.append(per_class_accuracy(predicted, test_labels, n_classes))
            confusion += confusion_matrix(predicted, test_labels, n_classes)
        mean, std = mean_std(accuracies)
        arms[arm] = {"n_train": history["n_train"], "accuracy_mean": mean, "accuracy_std": std,
                     "seeds": len(accuracies), "accuracies": accuracies,
                     "per_class_accuracy": np.mean(per_class, axis=0).tolist(),
                     "confusion": confusion.tolist()}

    filter_summary = json.loads((store.require("filtered_set") / SUMMARY_JSON).read_text())
    distill_summary = json.loads((store.require("distilled_set") / SUMMARY_JSON).read_text())
    generator_info = json.loads((store.require("generator") / "generator.json").read_text())
    judge_info = json.loads((store.require("judge") / "judge.json").read_text())
    real_manifest = json.loads((real_dir / MANIFEST_JSON).read_text())
    metrics = {
        "dataset": real_manifest["source"],
        "classes": class_names,
        "n_test": len(test_labels),
        "arms": arms,
        "filter": {key: value for key, value in filter_summary.items()
                   if key not in {"shard_digests"}},
        # Wall time stays out: the same params must give the same metrics.json, byte for byte.
        "distillation": {key: value for key, value in distill_summary.items()
                         if key not in {"seconds"}},
        # Every cell × architecture; `seconds` (distillation wall time) is its only field that
        # differs between two runs of the same params. Cells not built are in
        # distillation.not_built, with their reasons.
        "distillation_table": distillation_table(
            store.require("classifier_distilled"), store.require("distilled_set"),
            distill_summary["cells"], test_images, test_labels, runtime.torch_device),
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
            params.refinement, store, runtime.torch_device, test_images, test_labels, class_names,
            arms["synthetic"]["per_class_accuracy"])
        arms.update(loop_arms)
    leakage = params.contamination
    metrics["contamination"], contamination_grid = contamination_in_store(
        store.require("synthetic_shards"), store.path("shard_scores"), test_images, test_keys,
        real_dir,
        store.require("judge"), store.require("filtered_set"), class_names, runtime.torch_device,
        feature_threshold=leakage.feature_threshold, pixel_threshold=leakage.pixel_threshold,
        pixel_resolution=leakage.pixel_resolution, grid_pairs=leakage.grid_pairs)
    grids = _grids(store, class_names, params.eval_report.grid_per_class)
    grids[GRID] = contamination_grid
    for line in missing_arm_lines(missing):
        context.log.warning(f"eval_report: {line}")
    output = Path(params.eval_report.output_dir)
    # Published through the store first (uploaded with its commit when the root is an object
    # store, so other machines and people read the same report), then copied to output_dir.
    with store.publish_dir("eval_report") as directory:
        write_report(directory, metrics, grids)
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
               for arm, row in arms.items()},
            "missing_arms": dg.MetadataValue.json(missing),
            "contamination_count": metrics["contamination"]["count"],
            "seconds": round(time.perf_counter() - started, 1),
        },
        data_version=dg.DataVersion(sha256_file(output / "metrics.json")[:16]),
    )


def _grids(store: ArtifactStore, class_names: list[str],
           per_class: int) -> dict[str, np.ndarray]:
    """Image grids of each set, per class: real, synthetic, kept, rejected, distilled (if built)."""
    from synthfactory.ops.evaluation.plots import image_grid

    real_images, real_labels, _ = read_split(store.require("real_images"), "test")
    # Only the pictured samples are read (the synthetic set may not fit in memory).
    synthetic = grid_samples(store.require("synthetic_shards"), store.require("filtered_set"),
                             per_class, _image_shape(store))

    def grid(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return image_grid(images, labels, class_names, per_class=per_class)

    grids = {
        "real": grid(real_images, real_labels),
        "synthetic": grid(*synthetic["synthetic"]),
        "kept": grid(*synthetic["kept"]),
        "rejected": grid(*synthetic["rejected"]),
    }
    if read_not_built(store.require("distilled_set")) is None:
        distilled = distilled_arm(store.require("distilled_set"))
        grids["distilled"] = grid(distilled.images, distilled.labels)
    return grids
