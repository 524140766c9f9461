"""Scoring and filtering the synthetic images."""

import json
from pathlib import Path

import dagster as dg
import numpy as np

from synthfactory.assets.metadata import image_grid_md
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.curation import FILTER_MANIFEST, JUDGE_JSON, JUDGE_WEIGHTS
from synthfactory.ops.data.prompts import display_name, load_display_names
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.evaluation.arms import real_arm, synthetic_arm
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import digest_of_digests, dumps_json, sha256_file
from synthfactory.ops.storage.shards import read_samples, read_shard_info
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


@dg.asset(group_name="curation", kinds={"pytorch", "safetensors"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images"])
def judge(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
          runtime: TorchRuntime) -> dg.MaterializeResult:
    """The model that scores synthetic images: a ConvNet trained on real images, or CLIP.

    Backend `convnet` (default) trains a ConvNet on the real train split (or its few-shot
    subset); its softmax is the confidence filter's score and its penultimate features the space
    of near-duplicate removal, herding and k-center. Backend `clip` loads a CLIP model (local
    directory or hub id, safetensors only) and stores one text embedding per class (templates
    averaged) for zero-shot scoring; CLIP image embeddings are then the feature space.
    `judge.json` records the judge's accuracy on the real validation split (never test).
    """
    config = params.judge
    real_dir = store.require("real_images")
    val_images, val_labels, _ = read_split(real_dir, "val")
    if config.backend == "clip":
        return _clip_judge(context, params, store, runtime, val_images, val_labels)

    from synthfactory.ops.training.train import predict_proba, save_classifier, train_classifier

    data = real_arm(real_dir)
    n_classes = len(read_classes(real_dir))
    model, history = train_classifier(
        data.images, data.targets, n_classes, seed=derive_seed(runtime.seed, "judge"),
        device=runtime.torch_device, epochs=config.epochs, width=config.width,
        flip=params.classifiers.flip, log=context.log.info)
    val_accuracy = float(np.mean(
        predict_proba(model, val_images, device=runtime.torch_device).argmax(1) == val_labels))
    with store.publish_dir("judge") as directory:
        save_classifier(directory / JUDGE_WEIGHTS, model)
        info = {"kind": "convnet", "n_train": len(data.images), "val_accuracy": val_accuracy,
                "history": history, "sha256": sha256_file(directory / JUDGE_WEIGHTS)}
        (directory / JUDGE_JSON).write_text(dumps_json(info))
    context.log.info(f"judge: {val_accuracy:.4f} accuracy on {len(val_labels)} real validation "
                     "images")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path("judge"))), "kind": "convnet",
                  "val_accuracy": round(val_accuracy, 4), "n_train": len(data.images),
                  "train_seconds": round(history["seconds"], 1)},
        data_version=dg.DataVersion(info["sha256"][:16]),
    )


def _clip_judge(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                runtime: TorchRuntime, val_images: np.ndarray,
                val_labels: np.ndarray) -> dg.MaterializeResult:
    """The `clip` judge: resolve the model, embed the class prompts, measure zero-shot accuracy
    on the validation split."""
    from synthfactory.ops.curation.judges import ClipJudge, save_clip_judge
    from synthfactory.ops.generation.pretrained import resolve_model

    config = params.judge
    source = resolve_model(str(config.model), what="judge.model", revision=config.revision,
                           local_files_only=config.local_files_only)
    class_names = read_classes(store.require("real_images"))
    names = params.prompts.display_names
    shown = [display_name(name, load_display_names(names) if names else None)
             for name in class_names]
    clip = ClipJudge(source.path, runtime.torch_device, config.batch_size)
    class_embeddings = clip.class_text_embeddings(shown, config.templates)
    clip.use_class_embeddings(class_embeddings)
    val_accuracy = float(np.mean(clip.predict_proba(val_images).argmax(1) == val_labels))
    record = {"kind": "clip", **source.record(), "templates": config.templates,
              "class_texts": shown, "val_accuracy": val_accuracy}
    with store.publish_dir("judge") as directory:
        save_clip_judge(directory, record, class_embeddings)
    context.log.info(f"judge: CLIP zero-shot {val_accuracy:.4f} on {len(val_labels)} real "
                     "validation images")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path("judge"))), "kind": "clip",
                  "source": str(config.model), "revision": str(record["revision"]),
                  "val_accuracy": round(val_accuracy, 4), "digest": record["digest"]},
        data_version=dg.DataVersion(digest_of_digests(
            [record["digest"], params.digest("judge")])[:16]),
    )


@dg.asset(group_name="curation", kinds={"json"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["synthetic_shards", "judge"])
def filtered_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                 runtime: TorchRuntime) -> dg.MaterializeResult:
    """Which synthetic samples are kept, and why: no image copies, one record per sample.

    Filters, each switchable: quality flags (constant/blank images), judge confidence for the
    prompt's class (threshold and/or top fraction per class), and near-duplicate removal in
    judge-feature space. Reads every finished shard and says how many it used. Writes
    `manifest.jsonl` (scores, duplicate group, flags, keep, reasons) and `summary.json`.

    With `drop_test_near_duplicates`, near-copies of real *test* images (the `contamination`
    thresholds, the same rule the report counts with) are removed. This is the one read of test
    images outside `eval_report`, and it is a leakage guard, not a choice tuned on test: it reads
    test pixels and the judge's features of them, never test labels or any accuracy; its
    thresholds are fixed in params.yaml, not searched; and it can only remove images that would
    otherwise let an arm train on the very images it is measured on.
    """
    from synthfactory.ops.curation.filters import FilterSettings, filter_samples
    from synthfactory.ops.curation.judges import ClipJudge, load_judge
    from synthfactory.ops.curation.leakage import near_copies_of_test

    shards_dir = store.require("synthetic_shards")
    data = synthetic_arm(shards_dir)
    class_names = read_classes(store.require("real_images"))
    judge_model = load_judge(store.require("judge"), runtime.torch_device, params.judge.batch_size)
    features = judge_model.embed(data.images)
    clip_scores = None
    if isinstance(judge_model, ClipJudge):
        probs = judge_model.zero_shot(features)
        texts = prompt_texts(shards_dir, data.sources)
        clip_scores = judge_model.prompt_scores(features, [texts[key] for key in data.keys])
    else:
        probs = judge_model.predict_proba(data.images)
    settings = FilterSettings(**params.filtered_set.model_dump(exclude={"min_pass_rate"}))
    near = None
    if settings.drop_test_near_duplicates:
        leakage = params.contamination
        near = near_copies_of_test(data.images, features, store.require("real_images"),
                                   judge_model.embed, feature_threshold=leakage.feature_threshold,
                                   pixel_threshold=leakage.pixel_threshold,
                                   pixel_resolution=leakage.pixel_resolution)
    records, summary = filter_samples(data.keys, data.labels, probs, features, data.images,
                                      settings, class_names, clip_scores,
                                      None if near is None else near[0])
    if near is not None:
        for record, match in zip(records, near[1], strict=True):
            if match is not None:
                record["test_near_duplicate"] = match
    shard_of = _shard_of_keys(shards_dir, data.sources)
    for record in records:
        record["shard"] = shard_of[record["key"]]
    agreement = float(np.mean(probs.argmax(1) == data.labels))
    shard_digests = {name: read_shard_info(shards_dir / name).sha256 for name in data.sources}
    summary.update({"judge_agreement": agreement, "shards_used": data.sources,
                    "shard_digests": shard_digests})
    with store.publish_dir("filtered_set") as directory:
        with open(directory / FILTER_MANIFEST, "w") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        (directory / SUMMARY_JSON).write_text(dumps_json(summary))
    kept = np.array([record["keep"] for record in records])
    low = {name: row["pass_rate"] for name, row in summary["per_class"].items()
           if row["pass_rate"] < params.filtered_set.min_pass_rate}
    if low:
        context.log.warning(f"filtered_set: classes below the pass-rate floor "
                            f"{params.filtered_set.min_pass_rate}: {low} (a generator blind spot?)")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("filtered_set"))),
            "kept": summary["kept"], "total": summary["total"],
            "kept_fraction": round(summary["kept_fraction"], 4),
            "judge_agreement": dg.MetadataValue.float(round(agreement, 4)),
            "shards_used": len(data.sources),
            "reasons": dict(summary["reasons"]),
            "per_class": dg.MetadataValue.md(_pass_rate_table(summary)),
            "kept_grid": image_grid_md(data.images[kept], data.labels[kept], class_names, "kept"),
            "rejected_grid": image_grid_md(data.images[~kept], data.labels[~kept], class_names,
                                           "rejected (grey: none rejected)"),
            "shards_path": dg.MetadataValue.path(str(shards_dir)),
        },
        data_version=dg.DataVersion(digest_of_digests(
            [*shard_digests.values(), params.digest("filtered_set")])[:16]),
    )


def prompt_texts(shards_dir: Path, shard_names: list[str]) -> dict[str, str]:
    """key → the prompt text each synthetic sample was generated from (read from its JSON)."""
    return {sample.key: sample.meta["prompt"]["text"]
            for sample in read_samples([shards_dir / name for name in shard_names], decode=False)}


def _shard_of_keys(shards_dir: Path, shard_names: list[str]) -> dict[str, str]:
    """key → shard file name, from the sidecars (no need to re-read the tars)."""
    return {key: name for name in shard_names for key in read_shard_info(shards_dir / name).keys}


def _pass_rate_table(summary: dict) -> str:
    """Markdown table of kept/total per class for the asset's metadata."""
    rows = ["| class | kept | total | pass rate | mean confidence |", "|---|---|---|---|---|"]
    for name, row in summary["per_class"].items():
        rows.append(f"| {name} | {row['kept']} | {row['total']} | {row['pass_rate']:.2f} | "
                    f"{row['mean_confidence']:.3f} |")
    return "\n".join(rows)
