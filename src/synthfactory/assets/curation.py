"""Scoring and filtering the synthetic images."""

import json
import time
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from synthfactory.assets.metadata import GRID_PER_CLASS, image_grid_md
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.curation import FILTER_KEEP, FILTER_MANIFEST, JUDGE_JSON, JUDGE_WEIGHTS
from synthfactory.ops.data.prompts import display_name, load_display_names
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.training.shardsets import real_shard_set
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import digest_of_digests, dumps_json, sha256_file
from synthfactory.ops.storage.shards import Sample, read_samples, read_shard_info, write_shard
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
    of herding and k-center (near-copies are found in pixel space, `filters.dedup_features`).
    Backend `clip` loads a CLIP model (local
    directory or hub id, safetensors only) and stores one text embedding per class (templates
    averaged) for zero-shot scoring; CLIP image embeddings are then the feature space.
    `judge.json` records the judge's accuracy on the real validation split (never test).
    """
    config = params.judge
    real_dir = store.require("real_images")
    val_images, val_labels, _ = read_split(real_dir, "val")
    if config.backend == "clip":
        return _clip_judge(context, params, store, runtime, val_images, val_labels)

    from synthfactory.ops.training.predict import predict_proba
    from synthfactory.ops.training.train import ClassifierSettings, save_classifier, train_classifier

    # Loaded when small, streamed from the shards when over runtime.in_memory_mb.
    real = real_shard_set(real_dir)
    seed = derive_seed(runtime.seed, "judge")
    source = real.source(in_memory_mb=runtime.in_memory_mb, seed=derive_seed(seed, "stream"),
                         workers=runtime.workers, shuffle_buffer=runtime.shuffle_buffer)
    n_classes = len(read_classes(real_dir))
    model, history = train_classifier(
        source, None, n_classes, ClassifierSettings(epochs=config.epochs, width=config.width,
                                                    flip=params.classifiers.flip),
        seed=seed, device=runtime.torch_device, log=context.log.info)
    val_accuracy = float(np.mean(
        predict_proba(model, val_images, device=runtime.torch_device).argmax(1) == val_labels))
    with store.publish_dir("judge") as directory:
        save_classifier(directory / JUDGE_WEIGHTS, model)
        info = {"kind": "convnet", "n_train": real.n_samples, "val_accuracy": val_accuracy,
                "history": history, "sha256": sha256_file(directory / JUDGE_WEIGHTS)}
        (directory / JUDGE_JSON).write_text(dumps_json(info))
    context.log.info(f"judge: {val_accuracy:.4f} accuracy on {len(val_labels)} real validation "
                     "images")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path("judge"))), "kind": "convnet",
                  "val_accuracy": round(val_accuracy, 4), "n_train": real.n_samples,
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


def build_shard_scores(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The `shard_scores` asset over the same shard partitions as `synthetic_shards`."""
    with warnings.catch_warnings():  # BackfillPolicy is beta: see build_synthetic_shards
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _shard_scores_asset(partitions)


def _shard_scores_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="shard_scores", group_name="curation", kinds={"pytorch", "safetensors"},
              code_version="2", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["synthetic_shards", "judge"], partitions_def=partitions,
              backfill_policy=dg.BackfillPolicy.single_run())
    def shard_scores(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                     runtime: TorchRuntime) -> dg.MaterializeResult:
        """The judge's view of one synthetic shard: everything the filter decides from.

        Per sample: the judge's class probabilities, its features (embeddings), the
        near-duplicate features (thumbnails, `filters.dedup_features`), the quality flags and,
        with a CLIP judge, the image's CLIP score against its own prompt; one
        `scores-<key>.safetensors` per partition (the shard's sha256 and the judge's digest in
        its metadata). Backfilled over GPUs beside generation;
        a range run loads the judge once, and a partition whose scores already describe the
        same shard bytes under the same judge is kept, not scored again. Two runs of one
        partition take turns (the partition's lease in the store).
        """
        from synthfactory.ops.curation.judges import ClipJudge, load_judge
        from synthfactory.ops.curation.scores import (score_shard, scores_are_current,
                                                      scores_name, write_scores)

        judge_dir = store.require("judge")
        judge_digest = judge_info(judge_dir)["digest"]
        model = None
        written, started, n_images, agree = [], time.perf_counter(), 0, 0
        for key in context.partition_keys:
            tar_path = store.require("synthetic_shards", f"shard-{key}.tar")
            info = read_shard_info(store.require("synthetic_shards", f"shard-{key}.json"))
            if info is None:
                raise FileNotFoundError(f"shard {key} is not finished: materialize its "
                                        "synthetic_shards partition first")
            name = scores_name(tar_path.name)
            with store.lock("shard_scores", key):
                target = store.refresh("shard_scores", name)
                if scores_are_current(target, shard_sha256=info.sha256, judge_digest=judge_digest):
                    context.log.info(f"shard {key}: scores already describe these bytes, kept")
                    store.push("shard_scores", name)  # a crash may have come before the upload
                    written.append({"shard": key, "count": info.count, "reused": True})
                    continue
                if model is None:  # loaded once per run, and only when a shard needs it
                    model = load_judge(judge_dir, runtime.torch_device, params.judge.batch_size)
                scores = score_shard(model, tar_path, clip=isinstance(model, ClipJudge))
                with store.publish_file("shard_scores", name) as temp:
                    write_scores(temp, scores, shard_sha256=info.sha256, judge_digest=judge_digest)
            n_images += len(scores.keys)
            agree += int(np.sum(scores.probs.argmax(1) == scores.labels))
            written.append({"shard": key, "count": len(scores.keys), "reused": False})
        seconds = time.perf_counter() - started
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("shard_scores"))),
            "shards": dg.MetadataValue.json(written), "n_scored": n_images,
            "seconds": round(seconds, 2),
            "images_per_second": round(n_images / seconds, 2) if n_images else 0.0,
            "judge_agreement": round(agree / n_images, 4) if n_images else None,
            "judge_digest": judge_digest})

    return shard_scores


def judge_info(judge_dir: Path) -> dict:
    """`judge.json` with `digest` set: the weights' sha256 of a trained judge, or the model digest
    of a CLIP judge (what shard scores were computed with)."""
    info = json.loads((judge_dir / JUDGE_JSON).read_text())
    return {**info, "digest": info.get("sha256") or info["digest"]}


@dg.asset(group_name="curation", kinds={"json"}, code_version="2",
          deps=["shard_scores", "synthetic_shards", "judge"])
def filtered_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                 runtime: TorchRuntime) -> dg.MaterializeResult:
    """Which synthetic samples are kept, and why: no image copies, one record per sample.

    Decided from `shard_scores` alone, never from the images, so it needs no GPU and its memory
    does not grow with the images: quality flags (constant/blank images), the CLIP score, judge
    confidence for the prompt's class (threshold and/or top fraction per class over all
    shards), margin, and near-copy removal by the pixel correlation of small thumbnails
    (`filters.dedup_features`, computed per shard by `shard_scores`; clustered, compared
    within clusters: the same decisions as the whole-set filter). Uses every finished shard
    whose scores describe its current bytes under the current judge, and says which shards it
    left out. Writes `manifest.jsonl` (scores, duplicate group, flags, keep, reasons),
    `keep.safetensors` (a keep mask per shard, for streaming readers) and `summary.json`.

    With `drop_test_near_duplicates`, near-copies of real *test* images (the `contamination`
    thresholds, the same rule the report counts with) are removed. Their judge features are the
    scores' `embeddings`; their pixels are read shard by shard (the scores do not keep pixels),
    and the judge embeds the test split once. This is the one read of test images outside
    `eval_report`, and it is a leakage guard, not a choice tuned on test: it reads test pixels
    and the judge's features of them, never test labels or any accuracy; its thresholds are
    fixed in params.yaml, not searched; and it can only remove images that would otherwise let
    an arm train on the very images it is measured on.
    """
    from synthfactory.ops.curation.filters import FilterSettings
    from synthfactory.ops.curation.scores import read_scores_metadata, scores_name
    from synthfactory.ops.curation.selection import (ScoredShard, grid_picks, select_from_scores,
                                                     summarise_selection, write_keep_masks,
                                                     write_manifest)

    class_names = read_classes(store.require("real_images"))
    judge = judge_info(store.require("judge"))
    sidecars = {path.with_suffix(".tar").name: read_shard_info(path.with_suffix(".tar"))
                for path in store.require_files("synthetic_shards", "shard-*.json")}
    scores = {path.name: path for path in store.require_files("shard_scores", "scores-*.safetensors")}
    usable, left_out = [], []
    for name, info in sorted(sidecars.items()):
        path = scores.get(scores_name(name))
        metadata = read_scores_metadata(path) if path is not None else {}
        if (metadata.get("shard_sha256") == info.sha256
                and metadata.get("judge_digest") == judge["digest"]):
            usable.append(ScoredShard(name, path))
        else:
            left_out.append(name)
    if left_out:
        context.log.warning(f"filtered_set: {len(left_out)} shard(s) have no scores of their "
                            f"current bytes under the current judge and are left out: {left_out}; "
                            "materialize shard_scores for them")
    if not usable:
        raise FileNotFoundError(f"no synthetic shard under {store.path('synthetic_shards')} has "
                                "current scores: materialize 'shard_scores' (all partitions)")
    settings = FilterSettings(**params.filtered_set.model_dump(exclude={"min_pass_rate"}))
    test_copies, test_matches = None, None
    if settings.drop_test_near_duplicates:
        from synthfactory.ops.curation.leakage import scored_near_copies

        leakage = params.contamination
        test_copies, test_matches = scored_near_copies(
            [(store.require("synthetic_shards", shard.name), shard.scores_path)
             for shard in usable], store.require("real_images"), store.require("judge"),
            runtime.torch_device, batch_size=params.judge.batch_size,
            feature_threshold=leakage.feature_threshold, pixel_threshold=leakage.pixel_threshold,
            pixel_resolution=leakage.pixel_resolution)
    spill = store.path(".spill")
    spill.mkdir(parents=True, exist_ok=True)
    selection = select_from_scores(usable, settings, clip=judge["kind"] == "clip",
                                   seed=derive_seed(runtime.seed, "filtered_set"), spill_dir=spill,
                                   test_copies=test_copies, test_matches=test_matches)
    summary = summarise_selection(selection, class_names, settings)
    agreement = float(np.mean(selection.predicted == selection.labels))
    shard_digests = {shard.name: sidecars[shard.name].sha256 for shard in usable}
    summary.update({"judge_agreement": agreement, "shards_used": list(shard_digests),
                    "shard_digests": shard_digests})
    with store.publish_dir("filtered_set") as directory:
        write_manifest(directory / FILTER_MANIFEST, selection, class_names)
        write_keep_masks(directory / FILTER_KEEP, selection.shard_keep_masks())
        (directory / SUMMARY_JSON).write_text(dumps_json(summary))
    low = {name: row["pass_rate"] for name, row in summary["per_class"].items()
           if row["pass_rate"] < params.filtered_set.min_pass_rate}
    if low:
        context.log.warning(f"filtered_set: classes below the pass-rate floor "
                            f"{params.filtered_set.min_pass_rate}: {low} (a generator blind spot?)")
    grids = _grid_images(store, selection, grid_picks(selection, GRID_PER_CLASS))
    stats = selection.dedup_stats
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("filtered_set"))),
            "kept": summary["kept"], "total": summary["total"],
            "kept_fraction": round(summary["kept_fraction"], 4),
            "judge_agreement": dg.MetadataValue.float(round(agreement, 4)),
            "shards_used": len(usable), "shards_left_out": dg.MetadataValue.json(left_out),
            "reasons": dict(summary["reasons"]),
            "dedup": dg.MetadataValue.json({"clusters": stats.clusters,
                                            "similarities_computed": stats.pairs_compared,
                                            "largest_cluster": stats.largest_cluster}),
            "per_class": dg.MetadataValue.md(_pass_rate_table(summary)),
            "kept_grid": image_grid_md(*grids["kept"], class_names, "kept"),
            "rejected_grid": image_grid_md(*grids["rejected"], class_names,
                                           "rejected (grey: none rejected)"),
            "shards_path": dg.MetadataValue.path(str(store.path("synthetic_shards"))),
        },
        data_version=dg.DataVersion(digest_of_digests(
            [*shard_digests.values(), judge["digest"], params.digest("filtered_set"),
             *([params.digest("contamination")] if settings.drop_test_near_duplicates
               else [])])[:16]),
    )



def _grid_images(store: ArtifactStore, selection: Any,
                 picks: dict[str, list[int]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The images of the picked samples, read from only the shards that hold them."""
    wanted = {selection.key(i): i for indices in picks.values() for i in indices}
    shard_names = sorted({selection.shards[int(selection.shard_index[i])] for i in wanted.values()})
    image_of = {}
    for name in shard_names:
        for sample in read_samples([store.require("synthetic_shards", name)]):
            if sample.key in wanted:
                image_of[sample.key] = (sample.image if sample.image.ndim == 3
                                        else sample.image[:, :, None])
    grids = {}
    for grid, indices in picks.items():
        if indices:
            images = np.stack([image_of[selection.key(i)] for i in indices])
        else:
            images = np.zeros((0, 1, 1, 1), np.uint8)
        grids[grid] = (images, selection.labels[indices])
    return grids


def _pass_rate_table(summary: dict) -> str:
    """Markdown table of kept/total per class for the asset's metadata."""
    rows = ["| class | kept | total | pass rate | mean confidence |", "|---|---|---|---|---|"]
    for name, row in summary["per_class"].items():
        rows.append(f"| {name} | {row['kept']} | {row['total']} | {row['pass_rate']:.2f} | "
                    f"{row['mean_confidence']:.3f} |")
    return "\n".join(rows)


@dg.asset(group_name="curation", kinds={"pytorch", "webdataset"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images", "judge"])
def retrieved_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                  runtime: TorchRuntime) -> dg.MaterializeResult:
    """The retrieval baseline: real images taken from an unlabeled pool instead of generated.

    The pool is `retrieval.pool` (an image folder or WebDataset shards), or the real train split
    with its labels hidden. Each class takes as many images as the synthetic arm has
    (`retrieval.per_class`, default `prompts.images_per_class`), ranked by cosine similarity in
    the judge's feature space to the class: CLIP's text embedding of the class with the CLIP
    judge, the mean judge embedding of the class's real training images otherwise; an image
    competes only for its most similar class. Writes `retrieved-00000.tar` (labels = the class
    each image was retrieved for) and `summary.json` with the label precision where the pool has
    hidden labels (ops/curation/retrieval.py).
    """
    from synthfactory.ops.curation.judges import ClipJudge, load_judge
    from synthfactory.ops.curation.retrieval import class_prototypes, label_precision, retrieve
    from synthfactory.ops.data.pool import Pool, load_pool
    from synthfactory.ops.data.real_images import read_image_shape, read_training_images

    real_dir = store.require("real_images")
    class_names = read_classes(real_dir)
    judge_model = load_judge(store.require("judge"), runtime.torch_device, params.judge.batch_size)
    pool_source = params.retrieval.pool
    if pool_source is None:
        images, labels, keys = read_split(real_dir, "train")  # all of train, labels hidden
        pool = Pool(images, labels, keys)
    else:
        height, _, channels = read_image_shape(real_dir)
        pool = load_pool(pool_source, height, channels, class_names)
    if isinstance(judge_model, ClipJudge):
        assert judge_model.class_embeddings is not None  # set by load_judge
        queries, query = judge_model.class_embeddings.numpy(), "CLIP text embedding of the class"
    else:
        train_images, train_labels, _ = read_training_images(real_dir)
        queries = class_prototypes(judge_model.embed(train_images), train_labels, len(class_names))
        query = "mean judge embedding of the class's real training images"
    per_class = params.retrieval.per_class or params.prompts.images_per_class
    found = retrieve(judge_model.embed(pool.images), queries, per_class)
    precision = label_precision(found.classes, pool.hidden_labels[found.indices], class_names)
    counts = np.bincount(found.classes, minlength=len(class_names))
    summary = {"pool": pool_source or "real train split (labels hidden)", "query": query,
               "per_class": per_class, "pool_size": len(pool.keys), "n_images": len(found.indices),
               "pool_labelled": pool.labelled, "pool_skipped": dict(sorted(pool.skipped.items())),
               "shortfall": {name: int(per_class - count) for name, count in
                             zip(class_names, counts, strict=True) if count < per_class},
               "label_precision": precision}
    with store.publish_dir("retrieved_set") as directory:
        samples = (Sample(key=f"r{position:06d}", image=pool.images[index],
                          label=int(found.classes[position]),
                          meta={"pool_key": pool.keys[index],
                                "score": round(float(found.scores[position]), 6),
                                "hidden_label": int(pool.hidden_labels[index])})
                   for position, index in enumerate(found.indices))
        shard = write_shard(directory / "retrieved-00000.tar", samples)
        summary["sha256"] = shard.sha256
        (directory / SUMMARY_JSON).write_text(dumps_json(summary))
    if summary["shortfall"]:
        context.log.warning(f"retrieved_set: classes short of {per_class} images: "
                            f"{summary['shortfall']} (the pool has too few near them)")
    overall = None if precision is None else round(float(precision["overall"]), 4)
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path("retrieved_set"))),
                  "pool_size": len(pool.keys), "n_images": len(found.indices),
                  "label_precision": dg.MetadataValue.float(overall) if overall is not None
                  else "no hidden labels",
                  "grid": image_grid_md(pool.images[found.indices], found.classes, class_names,
                                        "retrieved")},
        data_version=dg.DataVersion(shard.sha256[:16]))
