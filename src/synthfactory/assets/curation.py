"""Scoring, filtering and distilling the synthetic images."""

import json
import time
from pathlib import Path

import dagster as dg
import numpy as np

from synthfactory.ops.arms import (FILTER_MANIFEST, JUDGE_JSON, JUDGE_WEIGHTS, SUMMARY_JSON,
                                   filtered_arm, real_arm, synthetic_arm)
from synthfactory.ops.atomic import digest_of_digests, dumps_json, sha256_file
from synthfactory.ops.prompts import display_name, load_display_names
from synthfactory.ops.real_data import read_classes, read_split
from synthfactory.ops.shards import Sample, read_samples, read_shard_info, write_shard
from synthfactory.assets.metadata import class_counts_md, image_grid_md
from synthfactory.executors import GPU_OP_TAGS
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
    `judge.json` records the judge's accuracy on the real test split.
    """
    config = params.judge
    real_dir = store.require("real_images")
    test_images, test_labels, _ = read_split(real_dir, "test")
    if config.backend == "clip":
        return _clip_judge(context, params, store, runtime, test_images, test_labels)

    from synthfactory.ops.train import predict_proba, save_classifier, train_classifier

    data = real_arm(real_dir)
    n_classes = len(read_classes(real_dir))
    model, history = train_classifier(
        data.images, data.targets, n_classes, seed=_seed(runtime, "judge"),
        device=runtime.torch_device, epochs=config.epochs, width=config.width,
        flip=params.classifiers.flip, log=context.log.info)
    test_accuracy = float(np.mean(
        predict_proba(model, test_images, device=runtime.torch_device).argmax(1) == test_labels))
    with store.publish_dir("judge") as directory:
        save_classifier(directory / JUDGE_WEIGHTS, model)
        info = {"kind": "convnet", "n_train": len(data.images), "test_accuracy": test_accuracy,
                "history": history, "sha256": sha256_file(directory / JUDGE_WEIGHTS)}
        (directory / JUDGE_JSON).write_text(dumps_json(info))
    context.log.info(f"judge: {test_accuracy:.4f} accuracy on {len(test_labels)} real test images")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path("judge"))), "kind": "convnet",
                  "test_accuracy": round(test_accuracy, 4), "n_train": len(data.images),
                  "train_seconds": round(history["seconds"], 1)},
        data_version=dg.DataVersion(info["sha256"][:16]),
    )


def _clip_judge(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                runtime: TorchRuntime, test_images: np.ndarray,
                test_labels: np.ndarray) -> dg.MaterializeResult:
    """The `clip` judge: resolve the model, embed the class prompts, measure zero-shot accuracy."""
    from synthfactory.ops.judges import ClipJudge, save_clip_judge
    from synthfactory.ops.pretrained import resolve_model

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
    test_accuracy = float(np.mean(clip.predict_proba(test_images).argmax(1) == test_labels))
    record = {"kind": "clip", **source.record(), "templates": config.templates,
              "class_texts": shown, "test_accuracy": test_accuracy}
    with store.publish_dir("judge") as directory:
        save_clip_judge(directory, record, class_embeddings)
    context.log.info(f"judge: CLIP zero-shot {test_accuracy:.4f} on {len(test_labels)} real "
                     "test images")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path("judge"))), "kind": "clip",
                  "source": str(config.model), "revision": str(record["revision"]),
                  "test_accuracy": round(test_accuracy, 4), "digest": record["digest"]},
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
    """
    from synthfactory.ops.filters import FilterSettings, filter_samples
    from synthfactory.ops.judges import ClipJudge, load_judge

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
    records, summary = filter_samples(data.keys, data.labels, probs, features, data.images,
                                      settings, class_names, clip_scores)
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


@dg.asset(group_name="curation", kinds={"pytorch", "webdataset"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["filtered_set", "judge"])
def distilled_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                  runtime: TorchRuntime) -> dg.MaterializeResult:
    """A small set of `ipc` images per class distilled from the filtered set.

    `random`, `herding` and `kcenter` select real synthetic samples (the latter two in judge
    feature space); `dm` (distribution matching) learns new images whose embeddings under
    randomly initialised ConvNets (or the judge's features, `dm_features: judge`) match the
    class means of the filtered set. Labels are hard, or
    the judge's probabilities with `labels: soft`. Written as shards like every other set.
    """
    from synthfactory.ops.distill import (distribution_matching, select_herding, select_kcenter,
                                          select_random)
    from synthfactory.ops.judges import load_judge

    config = params.distilled_set
    source = filtered_arm(store.require("synthetic_shards"), store.require("filtered_set"))
    class_names = read_classes(store.require("real_images"))
    n_classes = len(class_names)
    judge_model = load_judge(store.require("judge"), runtime.torch_device, params.judge.batch_size)
    seed = _seed(runtime, "distilled_set")
    started = time.perf_counter()
    history: dict = {}
    if config.method == "dm":
        images, labels, history = distribution_matching(
            source.images, source.labels, n_classes, config.ipc, seed=seed,
            device=runtime.torch_device, iterations=config.iterations,
            learning_rate=config.learning_rate, batch_real=config.batch_real,
            log=context.log.info,
            features=judge_model.embed_tensor if config.dm_features == "judge" else None)
        origins = ["dm"] * len(images)
    else:
        if config.method == "random":
            chosen = select_random(source.labels, config.ipc, seed)
        else:
            features = judge_model.embed(source.images)
            chosen = (select_herding(features, source.labels, config.ipc)
                      if config.method == "herding"
                      else select_kcenter(features, source.labels, config.ipc, seed))
        images, labels = source.images[chosen], source.labels[chosen]
        origins = [source.keys[i] for i in chosen]
    seconds = time.perf_counter() - started
    soft = judge_model.predict_proba(images) if config.labels == "soft" else None
    summary = {"method": config.method, "ipc": config.ipc, "labels": config.labels,
               "dm_features": config.dm_features if config.method == "dm" else None,
               "n_images": len(images), "source_size": len(source.images),
               "seconds": round(seconds, 2),
               "history": history}
    with store.publish_dir("distilled_set") as directory:
        samples = (Sample(key=f"d{index:06d}", image=images[index], label=int(labels[index]),
                          meta={"method": config.method, "origin": origins[index],
                                **({"soft_label": soft[index].round(6).tolist()}
                                   if soft is not None else {})})
                   for index in range(len(images)))
        shard = write_shard(directory / "distilled-00000.tar", samples)
        summary["sha256"] = shard.sha256
        (directory / SUMMARY_JSON).write_text(dumps_json(summary))
    metadata = {"path": dg.MetadataValue.path(str(store.path("distilled_set"))),
                "method": config.method, "ipc": config.ipc, "n_images": len(images),
                "source_size": len(source.images), "seconds": round(seconds, 1),
                "per_class": class_counts_md(labels, class_names),
                "grid": image_grid_md(images, labels, class_names,
                                      f"{config.method}, {config.ipc} per class",
                                      per_class=min(config.ipc, 10))}
    if history:
        metadata["matching_loss_initial"] = round(float(history["initial_loss"]), 4)
        metadata["matching_loss_final"] = round(float(history["final_loss"]), 4)
    return dg.MaterializeResult(metadata=metadata,
                                data_version=dg.DataVersion(shard.sha256[:16]))


def _seed(runtime: TorchRuntime, asset: str) -> int:
    """The seed an asset passes to ops, which derive their own sub-streams from it."""
    from synthfactory.ops.seeds import derive_seed

    return derive_seed(runtime.seed, asset)


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
