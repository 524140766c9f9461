"""Scoring and filtering the synthetic images."""

import time
import warnings
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.curation.decisions import FilterDecisions, decide_filter, grid_images
from synthfactory.ops.curation.filters import FilterSettings
from synthfactory.ops.curation.judge_record import judge_info
from synthfactory.ops.data.real_images import read_classes
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.atomic import digest_of_digests
from synthfactory.params import Params
from synthfactory.publishing import GRID_PER_CLASS, image_grid_md, path_md, placement
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

JUDGE_DESCRIPTION = """\
The model that scores synthetic images: a ConvNet trained on real images, or CLIP.

Backend `convnet` (default) trains a ConvNet on the real train split (or its few-shot
subset); its softmax is the confidence filter's score and its penultimate features the space
of herding and k-center (near-copies are found in pixel space, `filters.dedup_features`).
Backend `clip` loads a CLIP model (local
directory or hub id, safetensors only) and stores one text embedding per class (templates
averaged) for zero-shot scoring; CLIP image embeddings are then the feature space.
`judge.json` records the judge's accuracy on the real validation split (never test)."""

SHARD_SCORES_DESCRIPTION = """\
The judge's view of one synthetic shard: everything the filter decides from.

Per sample: the judge's class probabilities, its features (embeddings), the
near-duplicate features (thumbnails, `filters.dedup_features`), the quality flags and,
with a CLIP judge, the image's CLIP score against its own prompt; one
`scores-<key>.safetensors` per partition (the shard's sha256 and the judge's digest in
its metadata). Backfilled over GPUs beside generation;
a range run loads the judge once, and a partition whose scores already describe the
same shard bytes under the same judge is kept, not scored again. Two runs of one
partition take turns (the partition's lease in the store)."""

FILTERED_SET_DESCRIPTION = """\
Which synthetic samples are kept, and why: no image copies, one record per sample.

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
an arm train on the very images it is measured on."""

RETRIEVED_SET_DESCRIPTION = """\
The retrieval baseline: real images taken from an unlabeled pool instead of generated.

Each class takes as many images as the synthetic arm has (`retrieval.per_class`, default
`prompts.images_per_class`), ranked by cosine similarity to the class; an image competes only
for its most similar class. The default pool is the real train split less a labelled part
(`retrieval.labelled_per_class` per class, seeded; the few-shot shots under few-shot), labels
hidden: the ranking (`retrieval.embedding`: a ConvNet trained with the judge's recipe on the
labelled part, or pixels) and its class prototypes learn from the labelled part only, never
from the pool's labels. An external pool (`retrieval.pool`) is ranked by the judge (CLIP's
text embedding of the class, or the ConvNet judge's class means), after its near-copies of
real test images (the `contamination` rule) are dropped and counted. Writes
`retrieved-00000.tar` (labels = the class each image was retrieved for) and `summary.json`:
what ranked the pool, the labelled part, the dropped near-copies and the label precision
where the pool has hidden labels (a measurement, never an input; ops/curation/retrieval.py)."""


def judge_fields(config: Any, flip: bool, display_names: str | None) -> dict[str, Any]:
    """`JudgeSettings` fields from the `judge` section, `classifiers.flip` and
    `prompts.display_names`: the judge's recipe, which the retrieval ranking's labelled ConvNet
    trains with too. (The callers read those params themselves, so that dvc-sync sees them.)"""
    return {"backend": config.backend, "epochs": config.epochs, "width": config.width,
            "flip": flip, "model": config.model, "revision": config.revision,
            "local_files_only": config.local_files_only, "templates": config.templates,
            "batch_size": config.batch_size, "display_names": display_names}


@dg.asset(group_name="curation", kinds={"pytorch", "safetensors"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images"], description=JUDGE_DESCRIPTION)
def judge(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
          runtime: TorchRuntime) -> dg.MaterializeResult:
    # deferred: torch
    from synthfactory.ops.curation.judge_training import JudgeSettings, make_judge

    config = params.judge
    settings = JudgeSettings(**judge_fields(config, params.classifiers.flip,
                                            params.prompts.display_names))
    made = make_judge(store.require("real_images"), settings, placement(runtime),
                      context.log.info)
    with store.publish_dir("judge") as directory:
        record = made.write(directory)
    context.log.info(made.line)
    common = {"path": path_md(store, "judge"), "kind": record["kind"]}
    if record["kind"] == "clip":
        return dg.MaterializeResult(
            metadata={**common, "source": str(config.model), "revision": str(record["revision"]),
                      "val_accuracy": round(record["val_accuracy"], 4),
                      "digest": record["digest"]},
            data_version=dg.DataVersion(digest_of_digests(
                [record["digest"], params.digest("judge")])[:16]))
    return dg.MaterializeResult(
        metadata={**common, "val_accuracy": round(record["val_accuracy"], 4),
                  "n_train": record["n_train"],
                  "train_seconds": round(record["history"]["seconds"], 1)},
        data_version=dg.DataVersion(record["sha256"][:16]))


def build_shard_scores(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The `shard_scores` asset over the same shard partitions as `synthetic_shards`."""
    with warnings.catch_warnings():  # BackfillPolicy is beta: see build_synthetic_shards
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _shard_scores_asset(partitions)


def _shard_scores_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="shard_scores", group_name="curation", kinds={"pytorch", "safetensors"},
              code_version="2", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["synthetic_shards", "judge"], partitions_def=partitions,
              backfill_policy=dg.BackfillPolicy.single_run(),
              description=SHARD_SCORES_DESCRIPTION)
    def shard_scores(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                     runtime: TorchRuntime) -> dg.MaterializeResult:
        from synthfactory.ops.curation.shard_scoring import score_shards  # deferred: torch

        started = time.perf_counter()
        done = score_shards(store, list(context.partition_keys), runtime.torch_device,
                            params.judge.batch_size, context.log.info)
        seconds, n_images = time.perf_counter() - started, done.n_images
        return dg.MaterializeResult(metadata={
            "path": path_md(store, "shard_scores"),
            "shards": dg.MetadataValue.json(done.written), "n_scored": n_images,
            "seconds": round(seconds, 2),
            "images_per_second": round(n_images / seconds, 2) if n_images else 0.0,
            "judge_agreement": round(done.agree / n_images, 4) if n_images else None,
            "judge_digest": done.judge_digest})

    return shard_scores


@dg.asset(group_name="curation", kinds={"json"}, code_version="2",
          deps=["shard_scores", "synthetic_shards", "judge"],
          description=FILTERED_SET_DESCRIPTION)
def filtered_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                 runtime: TorchRuntime) -> dg.MaterializeResult:
    class_names = read_classes(store.require("real_images"))
    judge = judge_info(store.require("judge"))
    settings = FilterSettings(**params.filtered_set.model_dump(exclude={"min_pass_rate"}))
    decisions = decide_filter(
        store, judge, settings, class_names=class_names,
        seed=derive_seed(runtime.seed, "filtered_set"), device=runtime.torch_device,
        batch_size=params.judge.batch_size,
        contamination=params.contamination.model_dump(exclude={"grid_pairs"}),
        warn=context.log.warning)
    with store.publish_dir("filtered_set") as directory:
        decisions.write(directory, class_names)
    _warn_low_pass_rates(context, decisions.summary, params.filtered_set.min_pass_rate)
    return dg.MaterializeResult(
        metadata=_filtered_metadata(store, decisions, class_names),
        data_version=dg.DataVersion(digest_of_digests(
            [*decisions.shard_digests.values(), judge["digest"], params.digest("filtered_set"),
             *([params.digest("contamination")] if settings.drop_test_near_duplicates
               else [])])[:16]),
    )


def _warn_low_pass_rates(context: dg.AssetExecutionContext, summary: dict[str, Any],
                         floor: float) -> None:
    low = {name: row["pass_rate"] for name, row in summary["per_class"].items()
           if row["pass_rate"] < floor}
    if low:
        context.log.warning(f"filtered_set: classes below the pass-rate floor "
                            f"{floor}: {low} (a generator blind spot?)")


def _filtered_metadata(store: ArtifactStore, decisions: FilterDecisions,
                       class_names: list[str]) -> dict[str, Any]:
    """What the filter shows: counts, reasons, dedup work, pass rates, kept/rejected grids."""
    summary, stats = decisions.summary, decisions.selection.dedup_stats
    grids = grid_images(store.require, decisions.selection, GRID_PER_CLASS)
    return {
        "path": path_md(store, "filtered_set"),
        "kept": summary["kept"], "total": summary["total"],
        "kept_fraction": round(summary["kept_fraction"], 4),
        "judge_agreement": dg.MetadataValue.float(round(summary["judge_agreement"], 4)),
        "shards_used": len(decisions.usable),
        "shards_left_out": dg.MetadataValue.json(decisions.left_out),
        "reasons": dict(summary["reasons"]),
        "dedup": dg.MetadataValue.json({"clusters": stats.clusters,
                                        "similarities_computed": stats.pairs_compared,
                                        "largest_cluster": stats.largest_cluster}),
        "per_class": dg.MetadataValue.md(_pass_rate_table(summary)),
        "kept_grid": image_grid_md(*grids["kept"], class_names, "kept"),
        "rejected_grid": image_grid_md(*grids["rejected"], class_names,
                                       "rejected (grey: none rejected)"),
        "shards_path": path_md(store, "synthetic_shards"),
    }


def _pass_rate_table(summary: dict) -> str:
    """Markdown table of kept/total per class for the asset's metadata."""
    rows = ["| class | kept | total | pass rate | mean confidence |", "|---|---|---|---|---|"]
    for name, row in summary["per_class"].items():
        rows.append(f"| {name} | {row['kept']} | {row['total']} | {row['pass_rate']:.2f} | "
                    f"{row['mean_confidence']:.3f} |")
    return "\n".join(rows)


@dg.asset(group_name="curation", kinds={"pytorch", "webdataset"}, code_version="2", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images", "judge"],
          description=RETRIEVED_SET_DESCRIPTION)
def retrieved_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                  runtime: TorchRuntime) -> dg.MaterializeResult:
    # deferred: torch
    from synthfactory.ops.curation.judge_training import JudgeSettings
    from synthfactory.ops.curation.retrieved_set import RetrievalSettings, retrieve_set

    real_dir, config = store.require("real_images"), params.retrieval
    class_names = read_classes(real_dir)
    per_class = config.per_class or params.prompts.images_per_class
    rule = params.contamination
    settings = RetrievalSettings(
        pool=config.pool, per_class=per_class, embedding=config.embedding,
        labelled_per_class=config.labelled(params.real_images.few_shot),
        judge=JudgeSettings(**judge_fields(params.judge, params.classifiers.flip,
                                           params.prompts.display_names)),
        feature_threshold=rule.feature_threshold, pixel_threshold=rule.pixel_threshold,
        pixel_resolution=rule.pixel_resolution)
    found = retrieve_set(real_dir, store.require("judge"), settings,
                         seed=runtime.seed, device=runtime.torch_device, log=context.log.info)
    with store.publish_dir("retrieved_set") as directory:
        summary = found.write(directory)
    precision = summary["label_precision"]
    if summary["shortfall"]:
        context.log.warning(f"retrieved_set: classes short of {per_class} images: "
                            f"{summary['shortfall']} (the pool has too few near them)")
    overall = None if precision is None else round(float(precision["overall"]), 4)
    return dg.MaterializeResult(
        metadata={"path": path_md(store, "retrieved_set"),
                  "pool_size": summary["pool_size"], "n_images": summary["n_images"],
                  "query": summary["query"],
                  "label_precision": dg.MetadataValue.float(overall) if overall is not None
                  else "no hidden labels",
                  "grid": image_grid_md(found.images, found.found.classes, class_names,
                                        "retrieved")},
        data_version=dg.DataVersion(summary["sha256"][:16]))
