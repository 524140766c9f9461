"""Distilling the filtered set to a few images per class."""

import time

import dagster as dg

from synthfactory.assets.metadata import class_counts_md, image_grid_md, not_built_result
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.data.real_images import read_classes
from synthfactory.ops.distillation.coresets import class_members
from synthfactory.ops.evaluation.arms import filtered_arm
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import Sample, write_shard
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


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
    When the filtered set lacks a class or keeps fewer than `ipc` images of one, the set is
    published as not built (`not_built.json` with the reason) and the report lists the arm as
    missing, instead of the run failing.
    """
    from synthfactory.ops.curation.judges import load_judge
    from synthfactory.ops.distillation.coresets import select_herding, select_kcenter, select_random
    from synthfactory.ops.distillation.dm import distribution_matching

    config = params.distilled_set
    class_names = read_classes(store.require("real_images"))
    n_classes = len(class_names)
    try:
        source = filtered_arm(store.require("synthetic_shards"), store.require("filtered_set"))
        check_every_class(source.labels, class_names, "the filtered set",
                          "loosen filtered_set thresholds or raise prompts.images_per_class")
        class_members(source.labels, config.ipc)  # every class holds at least ipc images
    except TooFewImages as error:
        # Degrade, don't discard: the distilled arm is recorded as missing, the rest goes on.
        return not_built_result(context, store, "distilled_set", str(error))
    judge_model = load_judge(store.require("judge"), runtime.torch_device, params.judge.batch_size)
    seed = derive_seed(runtime.seed, "distilled_set")
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
