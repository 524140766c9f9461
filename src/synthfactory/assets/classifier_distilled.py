"""The networks that evaluate each cell of the distillation table: `classifier_distilled`,
partitioned by cell (`<method>-ipc<N>-<source>`). See `synthfactory.assets.distillation` for the
design of the distillation partitions."""

import time
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.distillation.partitions import CELLS, cell_of
from synthfactory.params import Params
from synthfactory.asset_inputs import cell_table, distillation_width, partition_cells
from synthfactory.publishing import ONE_PER_RUN, partition_metadata, prune_partitions
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

DESCRIPTION = """\
Evaluation networks of each cell (one partition per cell), by the DD protocol:
`eval_models` fresh networks per distilled repeat, trained on its float32 images with
DSA (`cells/<cell>/<architecture>/r<repeat>-m<k>.safetensors`, validation accuracy in
`cells/<cell>/history.json`), for the ConvNet and each of `cross_architectures`; a set
with soft labels also trains its hard-label control (`<architecture>/hard/`). The
headline cell's ConvNets are also `seed-<i>.safetensors`: the `distilled` arm of the
report. Test accuracy only in eval_report. A cell recorded as not built has only the
record (passed on); when it is the headline cell, this asset records the `distilled`
arm as not built (top-level `not_built.json`) and the report lists it as missing."""


def classifier_distilled_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="classifier_distilled", group_name="distillation",
              kinds={"pytorch", "safetensors"}, code_version="4", pool="gpu",
              op_tags=GPU_OP_TAGS, deps=["distilled_set", "real_images"],
              partitions_def=partitions, backfill_policy=ONE_PER_RUN, description=DESCRIPTION)
    def classifier_distilled(context: dg.AssetExecutionContext, params: Params,
                             store: ArtifactStore, runtime: TorchRuntime) -> dg.MaterializeResult:
        # deferred: torch
        from synthfactory.ops.distillation.cell_networks import train_cell_networks

        table = cell_table(params)
        chosen = partition_cells(context, table)
        prune_partitions(context, store, ("classifier_distilled", CELLS),
                         [cell.key for cell in table], cell_of)
        real_dir = store.require("real_images")
        n_classes = len(read_classes(real_dir))
        val_images, val_labels, _ = read_split(real_dir, "val")
        started = time.perf_counter()
        rows = train_cell_networks(store, table, chosen, n_classes, (val_images, val_labels),
                                   _network_settings(params, runtime), runtime.torch_device,
                                   context.log.info)
        partition_metadata(context, rows, _cell_metadata)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("classifier_distilled"))),
            "cells_in_run": ", ".join(cell.key for cell in chosen),
            "seconds": round(time.perf_counter() - started, 1)})

    return classifier_distilled


def _network_settings(params: Params, runtime: TorchRuntime) -> Any:
    """What the params fix of the networks, as `ops.distillation.cell_networks` takes it."""
    # deferred: torch
    from synthfactory.ops.distillation.cell_networks import NetworkSettings

    config = params.distilled_set
    return NetworkSettings(architecture=config.architecture,
                           cross_architectures=list(config.cross_architectures),
                           eval_models=config.eval_models, width=distillation_width(params),
                           epochs=config.eval.epochs, learning_rate=config.eval.learning_rate,
                           batch_size=config.eval.batch_size, dsa=config.dsa.model_dump(),
                           seed=runtime.seed, use_learned_lr=config.eval.use_learned_lr)


def _cell_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """One cell's materialization: its networks and their validation accuracy, or the reason
    it was not built."""
    metadata = {name: value for name, value in row.items() if name not in ("key", "path")}
    if "val_accuracy" in metadata:
        metadata["val_accuracy"] = dg.MetadataValue.json(metadata["val_accuracy"])
    return {"path": dg.MetadataValue.path(row["path"]), **metadata}
