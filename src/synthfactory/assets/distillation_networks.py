"""The networks of distillation: the experts that trajectory cells match (`expert_trajectories`,
partitioned by expert) and the networks that evaluate each cell (`classifier_distilled`,
partitioned by cell). See `synthfactory.assets.distillation` for the design."""


import shutil
import time
from typing import Any

import dagster as dg
import numpy as np

from synthfactory.assets.distillation_common import (CELLS, ONE_PER_RUN, cell_of, dsa_of,
                                                     expert_digest, expert_of, partition_cells,
                                                     prune_partitions, source_data, table)
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.distillation.cells import Cell, expert_keys, parse_expert
from synthfactory.ops.evaluation.arms import HISTORY_JSON, TrainingData
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.not_built import (NOT_BUILT_JSON, not_built_record, read_not_built,
                                                write_not_built)
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


def expert_trajectories_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The `expert_trajectories` asset over the expert partitions (`<source>-expert-<k>`)."""
    @dg.asset(name="expert_trajectories", group_name="distillation",
              kinds={"pytorch", "safetensors"}, code_version="2", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["real_images", "filtered_set"], partitions_def=partitions,
              backfill_policy=ONE_PER_RUN)
    def expert_trajectories(context: dg.AssetExecutionContext, params: Params,
                            store: ArtifactStore, runtime: TorchRuntime) -> dg.MaterializeResult:
        """Experts for trajectory matching, one partition each (`real-expert-0`, …): a network
        trained on the source that an `mtt` or `datm` cell distils, its parameters after every
        epoch as `<expert>.safetensors` (float32 (epochs + 1) × P). Experts train in parallel,
        one run each in a backfill; an expert finished from the same inputs is kept."""
        from synthfactory.ops.distillation.cellstore import load_trajectory, save_trajectory
        from synthfactory.ops.distillation.trajectories import train_expert

        config, distill = params.expert_trajectories, params.distilled_set
        wanted = expert_keys(table(params), config.experts)
        unknown = [key for key in context.partition_keys if key not in wanted]
        if unknown:
            raise ValueError(f"experts {unknown} are not what this run's params need "
                             f"({', '.join(wanted) or 'none: no mtt/datm cell'}): reload the "
                             "code location after changing distilled_set or expert_trajectories")
        prune_partitions(context, store, ("expert_trajectories",), wanted, expert_of)
        n_classes = len(read_classes(store.require("real_images")))
        sources: dict[str, TrainingData] = {}
        started = time.perf_counter()
        for key in context.partition_keys:
            source, index = parse_expert(key)
            if source not in sources:  # one read of each source for all its experts
                sources[source] = source_data(store, source)
            data = sources[source]
            digest = expert_digest(params, data, runtime.seed, index)
            path = store.path("expert_trajectories", f"{key}.safetensors")
            expert_started = time.perf_counter()
            meta: dict[str, Any] = {"source": source, "expert": index, "n_train": len(data.images),
                                    "epochs": config.epochs, "inputs_digest": digest}
            if path.is_file() and load_trajectory(path)[1].get("inputs_digest") == digest:
                context.log.info(f"expert {key}: already finished from the same inputs, kept")
                store.push("expert_trajectories", path.name)  # a crash may predate the upload
                meta["kept"] = True
            else:
                trajectory, history = train_expert(
                    data.images, data.labels, n_classes,
                    seed=derive_seed(runtime.seed, "expert_trajectories", source, index),
                    device=runtime.torch_device, epochs=config.epochs,
                    learning_rate=config.learning_rate, momentum=config.momentum,
                    batch_size=config.batch_size, dsa=dsa_of(params),
                    architecture=distill.architecture, width=distill.eval.width)
                with store.publish_file("expert_trajectories", path.name) as temp:
                    save_trajectory(temp, trajectory, {
                        "inputs_digest": digest, "epochs": config.epochs, "source": source,
                        "architecture": distill.architecture, "width": distill.eval.width})
                context.log.info(f"expert {key}: {config.epochs} epochs, final loss "
                                 f"{history['loss'][-1]:.4f}")
                meta.update(kept=False, final_loss=round(history["loss"][-1], 4),
                            parameters=history["parameters"])
            meta["seconds"] = round(time.perf_counter() - expert_started, 1)
            context.add_asset_metadata({**meta, "path": dg.MetadataValue.path(str(path))},
                                       partition_key=key)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("expert_trajectories"))),
            "experts_in_run": ", ".join(context.partition_keys),
            "seconds": round(time.perf_counter() - started, 1)})

    return expert_trajectories


def classifier_distilled_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="classifier_distilled", group_name="distillation",
              kinds={"pytorch", "safetensors"}, code_version="3", pool="gpu",
              op_tags=GPU_OP_TAGS, deps=["distilled_set", "real_images"],
              partitions_def=partitions, backfill_policy=ONE_PER_RUN)
    def classifier_distilled(context: dg.AssetExecutionContext, params: Params,
                             store: ArtifactStore, runtime: TorchRuntime) -> dg.MaterializeResult:
        """Evaluation networks of each cell (one partition per cell), by the DD protocol:
        `eval_models` fresh networks per distilled repeat, trained on its float32 images with
        DSA (`cells/<cell>/<architecture>/r<repeat>-m<k>.safetensors`, validation accuracy in
        `cells/<cell>/history.json`), for the ConvNet and each of `cross_architectures`. The
        headline cell's ConvNets are also `seed-<i>.safetensors`: the `distilled` arm of the
        report. Test accuracy only in eval_report. A cell recorded as not built has only the
        record (passed on); when it is the headline cell, this asset records the `distilled`
        arm as not built (top-level `not_built.json`) and the report lists it as missing."""
        from synthfactory.ops.distillation.cellstore import read_cell
        from synthfactory.ops.distillation.protocol import accuracy, train_network
        from synthfactory.ops.tensors import to_model_space
        from synthfactory.ops.training.train import save_classifier

        config = params.distilled_set
        cell_table = table(params)
        chosen = partition_cells(context, cell_table)
        prune_partitions(context, store, ("classifier_distilled", CELLS),
                         [cell.key for cell in cell_table], cell_of)
        real_dir = store.require("real_images")
        n_classes = len(read_classes(real_dir))
        val_images, val_labels, _ = read_split(real_dir, "val")
        val = to_model_space(val_images).to(runtime.torch_device) if len(val_labels) else None
        architectures = [config.architecture] + [a for a in config.cross_architectures
                                                 if a != config.architecture]
        started = time.perf_counter()
        for cell in chosen:
            cell_started = time.perf_counter()
            distilled = store.require("distilled_set", CELLS, cell.key)
            record = read_not_built(distilled)
            if record is not None:  # nothing to train: the record is passed on
                with store.publish_dir("classifier_distilled", CELLS, cell.key) as directory:
                    write_not_built(directory, f"classifier_distilled {cell.key}",
                                    record["reason"], upstream="distilled_set")
                context.add_asset_metadata({
                    "path": dg.MetadataValue.path(str(store.path("classifier_distilled", CELLS,
                                                                 cell.key))),
                    "built": False, "not_built_reason": record["reason"]},
                    partition_key=cell.key)
                if cell == cell_table[0]:
                    _publish_headline_not_built(store, cell, record["reason"])
                continue
            repeats = read_cell(distilled)
            history: dict[str, list[dict[str, Any]]] = {}
            with store.publish_dir("classifier_distilled", CELLS, cell.key) as directory:
                for architecture in architectures:
                    (directory / architecture).mkdir()
                    rows = history.setdefault(architecture, [])
                    for r, repeat in enumerate(repeats):
                        for k in range(config.eval_models):
                            net, trained = train_network(
                                repeat.images, repeat.targets, n_classes,
                                seed=derive_seed(runtime.seed, "classifier_distilled",
                                                 cell.key, architecture, r, k),
                                device=runtime.torch_device, architecture=architecture,
                                width=config.eval.width, epochs=config.eval.epochs,
                                learning_rate=config.eval.learning_rate,
                                batch_size=config.eval.batch_size, dsa=dsa_of(params))
                            save_classifier(directory / architecture / f"r{r}-m{k}.safetensors",
                                            net)
                            rows.append({"repeat": r, "model": k, "val_accuracy": accuracy(
                                net, val, val_labels) if val is not None else None, **trained})
                (directory / HISTORY_JSON).write_text(dumps_json(
                    {"cell": cell.key, "architectures": history}))
            means = {}  # validation accuracy per architecture (choices read val; test: the report)
            for architecture, rows in history.items():
                accuracies = [row["val_accuracy"] for row in rows
                              if row["val_accuracy"] is not None]
                if accuracies:
                    means[architecture] = round(float(np.mean(accuracies)), 4)
                    context.log.info(f"{cell.key} {architecture}: val accuracy "
                                     f"{means[architecture]:.4f} over {len(accuracies)} models")
            context.add_asset_metadata({
                "path": dg.MetadataValue.path(str(store.path("classifier_distilled", CELLS,
                                                             cell.key))),
                "architectures": ", ".join(architectures),
                "models": sum(len(rows) for rows in history.values()),
                "val_accuracy": dg.MetadataValue.json(means),
                "seconds": round(time.perf_counter() - cell_started, 1)}, partition_key=cell.key)
            if cell == cell_table[0]:
                _publish_headline_seeds(store, cell, config.architecture, repeats,
                                        history[config.architecture])
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("classifier_distilled"))),
            "cells_in_run": ", ".join(cell.key for cell in chosen),
            "seconds": round(time.perf_counter() - started, 1)})

    return classifier_distilled


def _publish_headline_seeds(store: ArtifactStore, cell: Cell, architecture: str,
                            repeats: list[Any], rows: list[dict[str, Any]]) -> None:
    """The headline cell's ConvNets as `seed-<i>.safetensors` (the `distilled` arm), then
    `history.json` last; seeds left over from a larger earlier set are removed."""
    source = store.path("classifier_distilled", CELLS, cell.key, architecture)
    seeds = []
    for index, row in enumerate(rows):
        with store.publish_file("classifier_distilled", f"seed-{index}.safetensors") as temp:
            shutil.copyfile(source / f"r{row['repeat']}-m{row['model']}.safetensors", temp)
        seeds.append({"seed_index": index, **row})
    for stale in store.path("classifier_distilled").glob("seed-*.safetensors"):
        if int(stale.stem.split("-")[1]) >= len(rows):
            stale.unlink()
            store.retract("classifier_distilled", stale.name)
    store.retract("classifier_distilled", NOT_BUILT_JSON)  # built now: an old record goes
    store.path("classifier_distilled", NOT_BUILT_JSON).unlink(missing_ok=True)
    with store.publish_file("classifier_distilled", HISTORY_JSON) as temp:
        temp.write_text(dumps_json({
            "arm": "distilled", "n_train": len(repeats[0].images), "sources": [cell.key],
            "soft_labels": repeats[0].soft_labels is not None, "seeds": seeds}))


def _publish_headline_not_built(store: ArtifactStore, cell: Cell, reason: str) -> None:
    """The headline cell was not built (`reason`): no `seed-<i>.safetensors`, the `distilled`
    arm's record (`not_built.json`, passed on from distilled_set) and a history without seeds,
    last."""
    for stale in store.path("classifier_distilled").glob("seed-*.safetensors"):
        stale.unlink()
        store.retract("classifier_distilled", stale.name)
    with store.publish_file("classifier_distilled", NOT_BUILT_JSON) as temp:
        temp.write_text(dumps_json(not_built_record(
            "classifier_distilled", f"distilled_set was not built: cell {cell.key}: {reason}",
            upstream="distilled_set")))
    with store.publish_file("classifier_distilled", HISTORY_JSON) as temp:
        temp.write_text(dumps_json({"arm": "distilled", "n_train": 0, "sources": [cell.key],
                                    "soft_labels": None, "seeds": []}))
