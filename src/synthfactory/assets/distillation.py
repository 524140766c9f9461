"""Distillation: expert trajectories, the table of distilled sets, and their evaluation networks.

Cells `<method>-ipc<N>-<source>` (every method × ipc × source of the params, in the table's
order) are the Dagster partitions of `distilled_set` and `classifier_distilled`; experts
`<source>-expert-<k>` are the partitions of `expert_trajectories`, which is in the graph only when
a cell matches trajectories (`mtt`, `datm`), as `generator_adapter` is only with `adapt: lora`.
Each partition is published on its own: a cell is the directory `cells/<cell>/`, an expert the
file `<expert>.safetensors`, each written to a temporary sibling and renamed into place. So:

- a backfill gives every cell (every expert) a run of its own (`BackfillPolicy.multi_run(1)`):
  the daemon starts them side by side, each step on its own GPU (a `gpu` pool slot; a pod with
  one GPU under dagster-k8s), and the cells of one source start as soon as their experts exist;
- re-materializing one partition re-makes that cell alone; the other cells' bytes stay;
- a partition finished from the same inputs (digest in `cell.json` / the expert's metadata) is
  kept on a rerun: a crashed table resumes where it stopped;
- each partition's materialization carries its own metadata (method, images, seconds, grid) and
  data version (the digest of its files, in `assets/dvc_versions.py`).

`multi_run(1)` rather than `single_run()` (the shards' policy): a shard is seconds of work for a
model loaded once per run, a cell minutes to hours of GPU work — one run per cell is what lets a
backfill spread a table over GPUs. `synthfactory run` (and the DVC stage) follows the same policy
(`synthfactory.planning`); Dagster's `--partition-range` wants single-run assets, so its CLI takes
one cell at a time (`--partition dm-ipc10-real`).

The first cell of the table is the headline: the run that makes it also writes the `distilled`
arm's files at the top of each asset's directory (`distilled-00000.tar`, `summary.json`;
`seed-<i>.safetensors`, `history.json`).
"""



import time
from functools import partial
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.data.real_images import read_classes
from synthfactory.ops.distillation.cells import TRAJECTORY_METHODS, Cell
from synthfactory.ops.distillation.coresets import class_members
from synthfactory.ops.evaluation.arms import TrainingData
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.not_built import (NOT_BUILT_JSON, not_built_record, read_not_built,
                                                write_not_built)
from synthfactory.ops.curation.judge_record import judge_info
from synthfactory.ops.distillation.partitions import CELLS, cell_of, data_digest
from synthfactory.params import Params, config_digest
from synthfactory.publishing import (ONE_PER_RUN, cell_table, class_counts_md, dsa_of,
                                     expert_digest, image_grid_md, partition_cells,
                                     prune_partitions, source_data)
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore
from synthfactory.ops.distillation.export import to_uint8_nhwc
from synthfactory.ops.storage.shards import Sample, sidecar_path, write_shard

HEADLINE_SHARD = "distilled-00000.tar"
# What to change when a source lacks a class or holds fewer than ipc images of one.
SOURCE_FIX = {"filtered": "loosen filtered_set thresholds or raise prompts.images_per_class",
              "synthetic": "raise prompts.images_per_class",
              "real": "add real images to the class or lower distilled_set.ipcs"}


def distilled_set_asset(partitions: dg.PartitionsDefinition, deps: list[Any]
                        ) -> dg.AssetsDefinition:
    """The `distilled_set` asset over the cell partitions, with its upstream `deps`."""
    @dg.asset(name="distilled_set", group_name="distillation",
              kinds={"pytorch", "safetensors", "webdataset"}, code_version="3", pool="gpu",
              op_tags=GPU_OP_TAGS, deps=deps, partitions_def=partitions,
              backfill_policy=ONE_PER_RUN)
    def distilled_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                      runtime: TorchRuntime) -> dg.MaterializeResult:
        """A table of small sets, one partition per cell (`dm-ipc10-real`: method × ipc ×
        source), each distilled `repeats` times, under `cells/<cell>/` as float32 safetensors
        (the training source of truth, model space recorded) and uint8 PNG shards (viewing,
        export).

        `random`, `herding`, `kcenter` select samples of the source (the latter two in the
        judge's feature space); `dm` (distribution matching), `dc` (gradient matching) and
        `mtt` / `datm` (trajectory matching, from `expert_trajectories`) learn images with
        differentiable siamese augmentation. Labels are hard, or the judge's probabilities with
        `labels: soft` (datm learns its own). The first cell is the headline: its run also
        writes its first repeat as the top-level shard that the `distilled` arm reads. A cell
        finished from the same inputs is kept; re-making one cell leaves the others.

        A cell whose source lacks a class or holds fewer than its ipc images of one is not an
        error: its directory holds `not_built.json` with the reason, and when it is the
        headline cell the `distilled` arm is reported missing (top-level `not_built.json`).
        """
        # deferred: torch
        from synthfactory.ops.curation.judges import load_judge
        # deferred: torch
        from synthfactory.ops.distillation.cellstore import cell_dir, cell_is_current, write_cell
        from synthfactory.ops.distillation.experts import load_experts  # deferred: torch
        from synthfactory.ops.distillation.recipes import MethodSettings, distill  # deferred: torch

        config = params.distilled_set
        table = cell_table(params)
        chosen = partition_cells(context, table)
        class_names = read_classes(store.require("real_images"))
        prune_partitions(context, store, ("distilled_set", CELLS),
                         [cell.key for cell in table], cell_of)
        settings = MethodSettings(dm=config.dm.model_dump(), dc=config.dc.model_dump(),
                                  mtt=config.mtt.model_dump(), architecture=config.architecture,
                                  width=config.eval.width)
        judge = None
        sources: dict[str, TrainingData] = {}
        started = time.perf_counter()
        for cell in chosen:
            cell_started = time.perf_counter()
            try:  # degrade, don't discard: a cell the data cannot make is recorded, not fatal
                if cell.source not in sources:  # one read of each source for all its cells
                    sources[cell.source] = source_data(store, cell.source)
                data = sources[cell.source]
                check_every_class(data.labels, class_names, f"the {cell.source} set",
                                  SOURCE_FIX[cell.source])
                class_members(data.labels, cell.ipc)  # every class holds at least ipc images
            except TooFewImages as error:
                with store.publish_dir("distilled_set", CELLS, cell.key) as temp:
                    write_not_built(temp, f"distilled_set {cell.key}", str(error))
                context.log.warning(f"{cell.key}: not built: {error}")
                context.add_asset_metadata({
                    "path": dg.MetadataValue.path(str(cell_dir(store.path("distilled_set"),
                                                               cell))),
                    "built": False, "not_built_reason": str(error),
                    "seconds": round(time.perf_counter() - cell_started, 1)},
                    partition_key=cell.key)
                if cell == table[0]:
                    _publish_headline(store, table, config.labels, config.repeats)
                continue
            trajectory_cell = cell.method in TRAJECTORY_METHODS
            method_config = (config.mtt.model_dump() if trajectory_cell
                             else getattr(config, cell.method).model_dump()
                             if cell.learned else {})
            needs_judge = (cell.method in ("herding", "kcenter") or config.labels == "soft"
                           or (cell.method == "dm" and config.dm.features == "judge"))
            digest = config_digest({"cell": cell.key, "data": data_digest(data),
                                    "method": method_config, "dsa": config.dsa.model_dump(),
                                    "labels": config.labels, "repeats": config.repeats,
                                    "architecture": config.architecture,
                                    "width": config.eval.width, "seed": runtime.seed,
                                    "judge": judge_info(store.require("judge"))["digest"] if needs_judge
                                    else None,
                                    "experts": params.expert_trajectories.model_dump()
                                    if trajectory_cell else None})
            directory = cell_dir(store.path("distilled_set"), cell)
            if cell_is_current(directory, digest):
                context.log.info(f"{cell.key}: already finished from the same inputs, kept")
                store.push("distilled_set", CELLS, cell.key)  # a crash may predate the upload
                kept = True
            else:
                if needs_judge and judge is None:
                    judge = load_judge(store.require("judge"), runtime.torch_device,
                                       params.judge.batch_size)
                features = (judge.embed(data.images) if judge is not None
                            and cell.method in ("herding", "kcenter") else None)
                trajectories = (load_experts(
                    store.require, cell, params.expert_trajectories.experts,
                    partial(expert_digest, params, data, runtime.seed))
                    if trajectory_cell else None)
                repeats = []
                for repeat in range(config.repeats):
                    result = distill(cell, data.images, data.labels, data.keys,
                                     len(class_names),
                                     seed=derive_seed(runtime.seed, "distilled_set", cell.key,
                                                      repeat),
                                     device=runtime.torch_device, dsa=dsa_of(params),
                                     settings=settings, features=features,
                                     judge_embed=judge.embed_tensor if judge is not None
                                     else None, trajectories=trajectories,
                                     log=context.log.info)
                    if config.labels == "soft" and result.soft_labels is None:
                        result.soft_labels = judge.predict_proba(to_uint8_nhwc(result.images))
                    repeats.append(result)
                seconds = time.perf_counter() - cell_started
                with store.publish_dir("distilled_set", CELLS, cell.key) as temp:
                    write_cell(temp, cell, repeats, {
                        "inputs_digest": digest, "labels": config.labels,
                        "source_size": len(data.images),
                        # The method's own settings as they ran (dm's features: judge or
                        # random_convnet).
                        "settings": method_config, "seconds": round(seconds, 3)})
                context.log.info(f"{cell.key}: {config.repeats} repeat(s) in {seconds:.1f}s")
                kept = False
            context.add_asset_metadata(
                _cell_metadata(store, cell, class_names, kept,
                               time.perf_counter() - cell_started), partition_key=cell.key)
            if cell == table[0]:
                _publish_headline(store, table, config.labels, config.repeats)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("distilled_set"))),
            "cells_in_run": ", ".join(cell.key for cell in chosen),
            "seconds": round(time.perf_counter() - started, 1)})

    return distilled_set


def _cell_metadata(store: ArtifactStore, cell: Cell, class_names: list[str], kept: bool,
                   seconds: float) -> dict[str, Any]:
    """What one cell's materialization shows: its settings, images per class, a grid."""
    # deferred: torch
    from synthfactory.ops.distillation.cellstore import cell_dir, read_cell, read_cell_record

    directory = cell_dir(store.path("distilled_set"), cell)
    record = read_cell_record(directory) or {}
    first = read_cell(directory)[0]
    pixels = to_uint8_nhwc(first.images)
    return {"path": dg.MetadataValue.path(str(directory)), "method": cell.method,
            "ipc": cell.ipc, "source": cell.source, "kept": kept,
            "repeats": len(record.get("repeats", [])), "n_images": len(pixels),
            "distill_seconds": record.get("seconds"), "seconds": round(seconds, 1),
            "per_class": class_counts_md(first.labels, class_names),
            "grid": image_grid_md(pixels, first.labels, class_names, f"{cell.key}, repeat 0",
                                  per_class=min(cell.ipc, 10))}


def _publish_headline(store: ArtifactStore, table: list[Cell], labels: str,
                      repeats: int) -> None:
    """The headline cell's first repeat as the top-level shard (the `distilled` arm), or, when
    the headline cell was not built, the top-level `not_built.json` (the arm is reported
    missing); then `summary.json`. Each file is published atomically, the summary last."""
    # deferred: torch
    from synthfactory.ops.distillation.cellstore import cell_dir, read_cell, read_cell_record

    headline = table[0]
    directory = cell_dir(store.path("distilled_set"), headline)
    tar = store.path("distilled_set", HEADLINE_SHARD)
    summary: dict[str, Any] = {"method": headline.method, "ipc": headline.ipc,
                               "source": headline.source, "labels": labels,
                               "cells": [cell.key for cell in table], "repeats": repeats}
    record = read_not_built(directory)
    if record is not None:  # the distilled arm itself cannot be made
        for stale in (tar, sidecar_path(tar)):  # no old headline beside the record
            store.retract("distilled_set", stale.name)
            stale.unlink(missing_ok=True)
        with store.publish_file("distilled_set", NOT_BUILT_JSON) as temp:
            temp.write_text(dumps_json(not_built_record(
                "distilled_set", f"cell {headline.key}: {record['reason']}")))
    else:
        first = read_cell(directory)[0]
        pixels = to_uint8_nhwc(first.images)
        store.retract("distilled_set", sidecar_path(tar).name)  # no old sidecar with the new tar
        shard = write_shard(tar, (
            Sample(key=f"d{i:06d}", image=pixels[i], label=int(first.labels[i]),
                   meta={"method": headline.method, "cell": headline.key,
                         **({"soft_label": first.soft_labels[i].round(6).tolist()}
                            if first.soft_labels is not None else {})})
            for i in range(len(pixels))))
        store.push("distilled_set", tar.name)
        store.push("distilled_set", sidecar_path(tar).name)
        store.retract("distilled_set", NOT_BUILT_JSON)  # built now: an old record goes
        store.path("distilled_set", NOT_BUILT_JSON).unlink(missing_ok=True)
        summary |= {"n_images": len(pixels), "sha256": shard.sha256,
                    "seconds": (read_cell_record(directory) or {}).get("seconds")}
    with store.publish_file("distilled_set", SUMMARY_JSON) as temp:
        temp.write_text(dumps_json(summary))
