"""Distillation: expert trajectories, the table of distilled sets, and their evaluation networks.

Cells are `<method>-ipc<N>-<source>` for every method × ipc × source of the params. Each cell
is a sub-directory of `distilled_set` (and of `classifier_distilled`); a rerun keeps every cell
that is finished and was made from the same inputs, and re-makes only the others.
"""


import shutil
import time
from typing import Any

import dagster as dg
import numpy as np

from synthfactory.assets.metadata import class_counts_md, image_grid_md
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.distillation.cells import TRAJECTORY_METHODS, Cell, cells
from synthfactory.ops.distillation.coresets import class_members
from synthfactory.ops.evaluation.arms import TrainingData, filtered_arm, real_arm, synthetic_arm
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.not_built import read_not_built, write_not_built
from synthfactory.params import Params, config_digest
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

TRAJECTORIES_JSON = "trajectories.json"
HISTORY_JSON = "history.json"
# What to change when a source lacks a class or holds fewer than ipc images of one.
SOURCE_FIX = {"filtered": "loosen filtered_set thresholds or raise prompts.images_per_class",
              "synthetic": "raise prompts.images_per_class",
              "real": "add real images to the class or lower distilled_set.ipcs"}


def _source(store: ArtifactStore, source: str) -> TrainingData:
    if source == "real":
        return real_arm(store.require("real_images"))
    if source == "synthetic":
        return synthetic_arm(store.require("synthetic_shards"))
    return filtered_arm(store.require("synthetic_shards"), store.require("filtered_set"))


def _data_digest(data: TrainingData) -> str:
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def _judge_digest(store: ArtifactStore) -> str:
    """The judge's weights digest (a trained judge) or directory digest (CLIP)."""
    import json

    info = json.loads((store.require("judge") / "judge.json").read_text())
    return str(info.get("sha256") or info["digest"])


def _cells(params: Params) -> list[Cell]:
    config = params.distilled_set
    return cells(list(config.methods), list(config.ipcs), list(config.sources))


def _dsa(params: Params) -> Any:
    from synthfactory.ops.distillation.dsa import DSA

    return DSA(strategy=params.distilled_set.dsa.strategy, fill=params.distilled_set.dsa.fill)


@dg.asset(group_name="distillation", kinds={"pytorch", "safetensors"}, code_version="1",
          pool="gpu", op_tags=GPU_OP_TAGS, deps=["real_images", "filtered_set"])
def expert_trajectories(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                        runtime: TorchRuntime) -> dg.MaterializeResult:
    """Experts for trajectory matching: `experts` networks trained on each source that an `mtt`
    or `datm` cell distils, their parameters after every epoch (`<source>/expert-<k>.safetensors`,
    float32 (epochs + 1) × P). Nothing is trained when no cell matches trajectories. An expert
    finished from the same inputs is kept on a rerun."""
    from synthfactory.ops.distillation.cellstore import load_trajectory, save_trajectory
    from synthfactory.ops.distillation.trajectories import train_expert

    config, distill = params.expert_trajectories, params.distilled_set
    sources = sorted({cell.source for cell in _cells(params) if cell.method in TRAJECTORY_METHODS})
    n_classes = len(read_classes(store.require("real_images")))
    previous = store.path("expert_trajectories")
    summary: dict[str, Any] = {"sources": {}, "experts": config.experts, "epochs": config.epochs}
    started = time.perf_counter()
    trained = kept = 0
    with store.publish_dir("expert_trajectories") as directory:
        for source in sources:
            data = _source(store, source)
            inputs = {"data": _data_digest(data), "expert_trajectories": config.model_dump(),
                      "dsa": distill.dsa.model_dump(), "architecture": distill.architecture,
                      "width": distill.eval.width, "seed": runtime.seed}
            rows = []
            for index in range(config.experts):
                name = f"{source}/expert-{index}.safetensors"
                digest = config_digest({**inputs, "index": index})
                old = previous / name
                if old.is_file() and load_trajectory(old)[1].get("inputs_digest") == digest:
                    (directory / source).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(old, directory / name)
                    context.log.info(f"expert {name}: already finished from the same inputs, kept")
                    kept += 1
                    rows.append({"expert": index, "kept": True})
                    continue
                trajectory, history = train_expert(
                    data.images, data.labels, n_classes,
                    seed=derive_seed(runtime.seed, "expert_trajectories", source, index),
                    device=runtime.torch_device, epochs=config.epochs,
                    learning_rate=config.learning_rate, momentum=config.momentum,
                    batch_size=config.batch_size, dsa=_dsa(params),
                    architecture=distill.architecture, width=distill.eval.width)
                save_trajectory(directory / name, trajectory,
                                {"inputs_digest": digest, "epochs": config.epochs,
                                 "architecture": distill.architecture,
                                 "width": distill.eval.width, "source": source})
                trained += 1
                rows.append({"expert": index, "final_loss": history["loss"][-1],
                             "parameters": history["parameters"]})
                context.log.info(f"expert {name}: {config.epochs} epochs, final loss "
                                 f"{history['loss'][-1]:.4f}")
            summary["sources"][source] = {"n_train": len(data.images), "experts": rows}
        (directory / TRAJECTORIES_JSON).write_text(dumps_json(summary))
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(store.path("expert_trajectories"))),
        "sources": ", ".join(sources) or "none (no mtt/datm cell)", "trained": trained,
        "kept": kept, "seconds": round(time.perf_counter() - started, 1)})


@dg.asset(group_name="distillation", kinds={"pytorch", "safetensors", "webdataset"},
          code_version="2", pool="gpu", op_tags=GPU_OP_TAGS,
          deps=["filtered_set", "judge", "real_images", "expert_trajectories"])
def distilled_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                  runtime: TorchRuntime) -> dg.MaterializeResult:
    """A table of small sets: one cell per method × ipc × source (`dm-ipc10-real`), each
    distilled `repeats` times, under `cells/<cell>/` as float32 safetensors (the training
    source of truth, model space recorded) and uint8 PNG shards (viewing, export).

    `random`, `herding`, `kcenter` select samples of the source (the latter two in the judge's
    feature space); `dm` (distribution matching), `dc` (gradient matching) and `mtt` / `datm`
    (trajectory matching, from `expert_trajectories`) learn images with differentiable siamese
    augmentation. Labels are hard, or the judge's probabilities with `labels: soft` (datm learns
    its own). The first cell is the headline: its first repeat is also written as the top-level
    shard that the `distilled` arm and the report's grid read. A rerun keeps every cell finished
    from the same inputs.

    A cell whose source lacks a class or holds fewer than its ipc images of one is not an error:
    its directory holds `not_built.json` with the reason, every other cell is made, and when it
    is the headline cell the `distilled` arm is reported missing (top-level `not_built.json`).
    """
    from synthfactory.ops.curation.judges import load_judge
    from synthfactory.ops.distillation.cellstore import (cell_dir, load_trajectory, reuse_cell,
                                                          write_cell)
    from synthfactory.ops.distillation.export import to_uint8_nhwc
    from synthfactory.ops.distillation.recipes import MethodSettings, distill
    from synthfactory.ops.storage.shards import Sample, write_shard

    config = params.distilled_set
    class_names = read_classes(store.require("real_images"))
    n_classes = len(class_names)
    table = _cells(params)
    judge = None
    settings = MethodSettings(dm=config.dm.model_dump(), dc=config.dc.model_dump(),
                              mtt=config.mtt.model_dump(), architecture=config.architecture,
                              width=config.eval.width)
    previous = store.path("distilled_set")
    sources: dict[str, TrainingData] = {}
    records: dict[str, Any] = {}
    not_built: dict[str, str] = {}
    started = time.perf_counter()
    with store.publish_dir("distilled_set") as directory:
        for cell in table:
            try:  # degrade, don't discard: a cell the data cannot make is recorded, not fatal
                if cell.source not in sources:  # one read of each source for all its cells
                    sources[cell.source] = _source(store, cell.source)
                data = sources[cell.source]
                check_every_class(data.labels, class_names, f"the {cell.source} set",
                                  SOURCE_FIX[cell.source])
                class_members(data.labels, cell.ipc)  # every class holds at least ipc images
            except TooFewImages as error:
                not_built[cell.key] = str(error)
                cell_dir(directory, cell).mkdir(parents=True)
                write_not_built(cell_dir(directory, cell), f"distilled_set {cell.key}", str(error))
                context.log.warning(f"{cell.key}: not built: {error}")
                continue
            method_config = (config.mtt.model_dump() if cell.method in TRAJECTORY_METHODS
                             else getattr(config, cell.method).model_dump()
                             if cell.learned else {})
            needs_judge = (cell.method in ("herding", "kcenter") or config.labels == "soft"
                           or (cell.method == "dm" and config.dm.features == "judge"))
            digest = config_digest({"cell": cell.key, "data": _data_digest(data),
                                    "method": method_config, "dsa": config.dsa.model_dump(),
                                    "labels": config.labels, "repeats": config.repeats,
                                    "architecture": config.architecture,
                                    "width": config.eval.width, "seed": runtime.seed,
                                    "judge": _judge_digest(store) if needs_judge else None,
                                    "experts": params.expert_trajectories.model_dump()
                                    if cell.method in TRAJECTORY_METHODS else None})
            if reuse_cell(previous, directory, cell, digest):
                context.log.info(f"{cell.key}: already finished from the same inputs, kept")
                records[cell.key] = {"kept": True}
                continue
            if needs_judge and judge is None:
                judge = load_judge(store.require("judge"), runtime.torch_device,
                                   params.judge.batch_size)
            features = (judge.embed(data.images)
                        if judge is not None and cell.method in ("herding", "kcenter") else None)
            trajectories = None
            if cell.method in TRAJECTORY_METHODS:
                expert_dir = store.require("expert_trajectories") / cell.source
                trajectories = [load_trajectory(path)[0]
                                for path in sorted(expert_dir.glob("expert-*.safetensors"))]
            cell_started = time.perf_counter()
            repeats = []
            for repeat in range(config.repeats):
                result = distill(cell, data.images, data.labels, data.keys, n_classes,
                                 seed=derive_seed(runtime.seed, "distilled_set", cell.key, repeat),
                                 device=runtime.torch_device, dsa=_dsa(params),
                                 settings=settings, features=features,
                                 judge_embed=judge.embed_tensor if judge is not None else None,
                                 trajectories=trajectories, log=context.log.info)
                if config.labels == "soft" and result.soft_labels is None:
                    result.soft_labels = judge.predict_proba(to_uint8_nhwc(result.images))
                repeats.append(result)
            seconds = time.perf_counter() - cell_started
            records[cell.key] = write_cell(cell_dir(directory, cell), cell, repeats, {
                "inputs_digest": digest, "labels": config.labels, "source_size": len(data.images),
                # The method's own settings as they ran (dm's features: judge or random_convnet).
                "settings": method_config, "seconds": round(seconds, 3)})
            context.log.info(f"{cell.key}: {config.repeats} repeat(s) in {seconds:.1f}s")
        headline = table[0]
        from synthfactory.ops.distillation.cellstore import read_cell

        summary = {"method": headline.method, "ipc": headline.ipc, "source": headline.source,
                   "labels": config.labels, "cells": [cell.key for cell in table],
                   "not_built": not_built, "repeats": config.repeats}
        if headline.key in not_built:  # the distilled arm itself cannot be made
            reason = f"cell {headline.key}: {not_built[headline.key]}"
            write_not_built(directory, "distilled_set", reason)
        else:
            first = read_cell(cell_dir(directory, headline))[0]
            pixels = to_uint8_nhwc(first.images)
            shard = write_shard(directory / "distilled-00000.tar", (
                Sample(key=f"d{i:06d}", image=pixels[i], label=int(first.labels[i]),
                       meta={"method": headline.method, "cell": headline.key,
                             **({"soft_label": first.soft_labels[i].round(6).tolist()}
                                if first.soft_labels is not None else {})})
                for i in range(len(pixels))))
            summary |= {"n_images": len(pixels), "sha256": shard.sha256}
        summary["seconds"] = round(time.perf_counter() - started, 2)
        (directory / SUMMARY_JSON).write_text(dumps_json(summary))
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(store.path("distilled_set"))),
        "cells": ", ".join(cell.key for cell in table),
        "kept": sum(1 for r in records.values() if r.get("kept")),
        "not_built_cells": dg.MetadataValue.json(not_built),
        "seconds": round(time.perf_counter() - started, 1)}
    if headline.key in not_built:
        return dg.MaterializeResult(metadata={**metadata, "built": False,
                                              "not_built_reason": reason})
    return dg.MaterializeResult(
        metadata={**metadata, "method": headline.method, "ipc": headline.ipc,
                  "n_images": len(pixels),
                  "per_class": class_counts_md(first.labels, class_names),
                  "grid": image_grid_md(pixels, first.labels, class_names,
                                        f"{headline.key}, repeat 0",
                                        per_class=min(headline.ipc, 10))},
        data_version=dg.DataVersion(shard.sha256[:16]))


@dg.asset(group_name="distillation", kinds={"pytorch", "safetensors"}, code_version="2",
          pool="gpu", op_tags=GPU_OP_TAGS, deps=["distilled_set", "real_images"])
def classifier_distilled(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                         runtime: TorchRuntime) -> dg.MaterializeResult:
    """Evaluation networks of every cell, by the DD protocol: `eval_models` fresh networks per
    distilled repeat, trained on its float32 images with DSA (`cells/<cell>/<architecture>/
    r<repeat>-m<k>.safetensors`), for the ConvNet and each of `cross_architectures`. The
    headline cell's ConvNets are also `seed-<i>.safetensors`: the `distilled` arm of the
    report. Validation accuracy is in history.json; test accuracy only in eval_report. Cells
    recorded as not built are skipped; when the headline cell is one of them, this asset records
    the `distilled` arm as not built (`not_built.json`) and the report lists it as missing."""
    from synthfactory.ops.distillation.cellstore import cell_dir, read_cell
    from synthfactory.ops.distillation.protocol import accuracy, train_network
    from synthfactory.ops.tensors import to_model_space
    from synthfactory.ops.training.train import save_classifier

    config = params.distilled_set
    real_dir = store.require("real_images")
    n_classes = len(read_classes(real_dir))
    val_images, val_labels, _ = read_split(real_dir, "val")
    val = to_model_space(val_images).to(runtime.torch_device) if len(val_labels) else None
    distilled_dir = store.require("distilled_set")
    architectures = [config.architecture] + [a for a in config.cross_architectures
                                             if a != config.architecture]
    table = _cells(params)
    cells_history: dict[str, Any] = {}
    headline_models: list[dict[str, Any]] = []
    started = time.perf_counter()
    with store.publish_dir("classifier_distilled") as directory:
        for cell in table:
            record = read_not_built(cell_dir(distilled_dir, cell))
            if record is not None:
                cells_history[cell.key] = {"not_built": record["reason"]}
                continue
            repeats = read_cell(cell_dir(distilled_dir, cell))
            cells_history[cell.key] = {}
            for architecture in architectures:
                out = cell_dir(directory, cell) / architecture
                out.mkdir(parents=True)
                rows = []
                for r, repeat in enumerate(repeats):
                    for k in range(config.eval_models):
                        net, history = train_network(
                            repeat.images, repeat.targets, n_classes,
                            seed=derive_seed(runtime.seed, "classifier_distilled", cell.key,
                                             architecture, r, k),
                            device=runtime.torch_device, architecture=architecture,
                            width=config.eval.width, epochs=config.eval.epochs,
                            learning_rate=config.eval.learning_rate,
                            batch_size=config.eval.batch_size, dsa=_dsa(params))
                        path = out / f"r{r}-m{k}.safetensors"
                        save_classifier(path, net)
                        val_accuracy = (accuracy(net, val, val_labels) if val is not None
                                        else None)
                        rows.append({"repeat": r, "model": k, "val_accuracy": val_accuracy,
                                     **history})
                        if cell == table[0] and architecture == config.architecture:
                            index = len(headline_models)
                            shutil.copy2(path, directory / f"seed-{index}.safetensors")
                            headline_models.append({"seed_index": index, **history})
                cells_history[cell.key][architecture] = rows
                accuracies = [row["val_accuracy"] for row in rows
                              if row["val_accuracy"] is not None]
                if accuracies:
                    context.log.info(f"{cell.key} {architecture}: val accuracy "
                                     f"{np.mean(accuracies):.4f} over {len(accuracies)} models")
        missing = read_not_built(distilled_dir)
        if missing is not None:  # no headline cell: the distilled arm is reported missing
            reason = f"distilled_set was not built: {missing['reason']}"
            write_not_built(directory, "classifier_distilled", reason, upstream="distilled_set")
            headline_info: dict[str, Any] = {"n_train": 0, "soft_labels": None}
        else:
            headline = read_cell(cell_dir(distilled_dir, table[0]))[0]
            headline_info = {"n_train": len(headline.images),
                             "soft_labels": headline.soft_labels is not None}
        (directory / HISTORY_JSON).write_text(dumps_json({
            "arm": "distilled", **headline_info, "sources": [table[0].key],
            "seeds": headline_models, "cells": cells_history}))
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(store.path("classifier_distilled"))),
        "cells": len(table), "architectures": ", ".join(architectures),
        "models": sum(len(rows) for arch in cells_history.values() if "not_built" not in arch
                      for rows in arch.values()),
        "seconds": round(time.perf_counter() - started, 1)}
    if missing is not None:
        metadata |= {"built": False, "not_built_reason": reason}
    return dg.MaterializeResult(metadata=metadata)
