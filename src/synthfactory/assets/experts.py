"""The experts that trajectory cells match: `expert_trajectories`, partitioned by expert
(`<source>-expert-<k>`), in the graph only when a cell matches trajectories (`mtt`, `datm`). See
`synthfactory.assets.distillation` for the design of the distillation partitions."""

import time
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.real_images import read_classes
from synthfactory.ops.distillation.cells import expert_keys, parse_expert
from synthfactory.ops.distillation.partitions import expert_of
from synthfactory.ops.evaluation.arms import TrainingData
from synthfactory.ops.seeds import derive_seed
from synthfactory.params import Params
from synthfactory.publishing import (ONE_PER_RUN, cell_table, dsa_of, expert_digest,
                                     prune_partitions, source_data)
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
        # deferred: torch
        from synthfactory.ops.distillation.cellstore import load_trajectory, save_trajectory
        from synthfactory.ops.distillation.trajectories import train_expert  # deferred: torch

        config, distill = params.expert_trajectories, params.distilled_set
        wanted = expert_keys(cell_table(params), config.experts)
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
