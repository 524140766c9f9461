"""The experts that trajectory cells match: `expert_trajectories`, partitioned by expert
(`<source>-expert-<k>`), in the graph only when a cell matches trajectories (`mtt`, `datm`). See
`synthfactory.assets.distillation` for the design of the distillation partitions."""

import time
from functools import partial
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.real_images import read_classes
from synthfactory.ops.distillation.cells import expert_keys
from synthfactory.ops.distillation.partitions import expert_of
from synthfactory.params import Params
from synthfactory.asset_inputs import (cell_table, distillation_width, expert_recipe,
                                       partition_experts, source_data)
from synthfactory.publishing import ONE_PER_RUN, partition_metadata, prune_partitions
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
        from synthfactory.ops.distillation.experts import train_experts  # deferred: torch

        wanted = expert_keys(cell_table(params), params.expert_trajectories.experts)
        keys = partition_experts(context, wanted)
        prune_partitions(context, store, ("expert_trajectories",), wanted, expert_of)
        n_classes = len(read_classes(store.require("real_images")))
        started = time.perf_counter()
        rows = train_experts(store, keys, n_classes, partial(source_data, store),
                             _expert_settings(params, runtime), runtime.torch_device,
                             context.log.info)
        partition_metadata(context, rows, _expert_metadata)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("expert_trajectories"))),
            "experts_in_run": ", ".join(keys),
            "seconds": round(time.perf_counter() - started, 1)})

    return expert_trajectories


def _expert_settings(params: Params, runtime: TorchRuntime) -> Any:
    """What the params fix of the experts, as `ops.distillation.experts` takes it."""
    from synthfactory.ops.distillation.experts import ExpertSettings  # deferred: torch

    config, distill = params.expert_trajectories, params.distilled_set
    return ExpertSettings(epochs=config.epochs, learning_rate=config.learning_rate,
                          momentum=config.momentum, batch_size=config.batch_size,
                          dsa=distill.dsa.model_dump(), architecture=distill.architecture,
                          width=distillation_width(params), seed=runtime.seed,
                          recipe=expert_recipe(params))


def _expert_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """One expert's materialization: what it trained on, whether it was kept, its loss."""
    return {**{name: value for name, value in row.items() if name not in ("key", "path")},
            "path": dg.MetadataValue.path(row["path"])}
