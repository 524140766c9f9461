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
from synthfactory.ops.data.real_images import read_classes
from synthfactory.ops.distillation.cells import parse_cell
from synthfactory.ops.distillation.export import to_uint8_nhwc
from synthfactory.ops.distillation.partitions import CELLS, cell_of
from synthfactory.params import Params
from synthfactory.asset_inputs import (cell_table, distillation_width, expert_recipe,
                                       partition_cells, source_data)
from synthfactory.publishing import (ONE_PER_RUN, class_counts_md, image_grid_md,
                                     partition_metadata, prune_partitions)
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

DESCRIPTION = """\
A table of small sets, one partition per cell (`dm-ipc10-real`: method × ipc ×
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
headline cell the `distilled` arm is reported missing (top-level `not_built.json`)."""


def distilled_set_asset(partitions: dg.PartitionsDefinition, deps: list[Any]
                        ) -> dg.AssetsDefinition:
    """The `distilled_set` asset over the cell partitions, with its upstream `deps`."""
    @dg.asset(name="distilled_set", group_name="distillation",
              kinds={"pytorch", "safetensors", "webdataset"}, code_version="3", pool="gpu",
              op_tags=GPU_OP_TAGS, deps=deps, partitions_def=partitions,
              backfill_policy=ONE_PER_RUN, description=DESCRIPTION)
    def distilled_set(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                      runtime: TorchRuntime) -> dg.MaterializeResult:
        # deferred: torch
        from synthfactory.ops.distillation.distilled_cells import distil_cells

        table = cell_table(params)
        chosen = partition_cells(context, table)
        class_names = read_classes(store.require("real_images"))
        prune_partitions(context, store, ("distilled_set", CELLS),
                         [cell.key for cell in table], cell_of)
        started = time.perf_counter()
        rows = distil_cells(store, table, chosen, class_names, partial(source_data, store),
                            _cell_settings(params, runtime), runtime.torch_device,
                            log=context.log.info, warn=context.log.warning)
        partition_metadata(context, rows, partial(_cell_metadata, store, class_names))
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path("distilled_set"))),
            "cells_in_run": ", ".join(cell.key for cell in chosen),
            "seconds": round(time.perf_counter() - started, 1)})

    return distilled_set


def _cell_settings(params: Params, runtime: TorchRuntime) -> Any:
    """What the params fix of the cells, as `ops.distillation.distilled_cells` takes it."""
    # deferred: torch
    from synthfactory.ops.distillation.distilled_cells import CellSettings
    from synthfactory.ops.distillation.recipes import MethodSettings  # deferred: torch

    config = params.distilled_set
    return CellSettings(
        methods=MethodSettings(dm=config.dm.model_dump(), dc=config.dc.model_dump(),
                               mtt=config.mtt.model_dump(), architecture=config.architecture,
                               width=distillation_width(params), gm_init=config.gm_init.model_dump()),
        dsa=config.dsa.model_dump(), labels=config.labels, repeats=config.repeats,
        random_draws=config.random_draws or config.repeats, seed=runtime.seed,
        judge_batch_size=params.judge.batch_size,
        n_experts=params.expert_trajectories.experts,
        experts=params.expert_trajectories.model_dump(), expert_recipe=expert_recipe(params))


def _cell_metadata(store: ArtifactStore, class_names: list[str], row: dict[str, Any]
                   ) -> dict[str, Any]:
    """What one cell's materialization shows: a cell not built, its reason; a cell made or
    kept, its settings, images per class, a grid."""
    # deferred: torch
    from synthfactory.ops.distillation.cellstore import read_cell, read_cell_record

    if not row["built"]:
        return {"path": dg.MetadataValue.path(row["path"]), "built": False,
                "not_built_reason": row["not_built_reason"], "seconds": row["seconds"]}
    cell = parse_cell(row["key"])
    directory = store.path("distilled_set", CELLS, cell.key)
    record = read_cell_record(directory) or {}
    first = read_cell(directory)[0]
    pixels = to_uint8_nhwc(first.images)
    return {"path": dg.MetadataValue.path(str(directory)), "method": cell.method,
            "ipc": cell.ipc, "source": cell.source, "kept": row["kept"],
            "repeats": len(record.get("repeats", [])), "n_images": len(pixels),
            "distill_seconds": record.get("seconds"), "seconds": round(row["seconds"], 1),
            "per_class": class_counts_md(first.labels, class_names),
            "grid": image_grid_md(pixels, first.labels, class_names, f"{cell.key}, repeat 0",
                                  per_class=min(cell.ipc or 10, 10))}
