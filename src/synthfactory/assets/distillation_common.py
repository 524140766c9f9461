"""What the distillation assets share: the table of cells, the cells and experts of a run, the
source data, the digests that decide whether a partition is kept, and the pruning of partitions
that the params no longer have. See `synthfactory.assets.distillation` for the design."""


import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from synthfactory.ops.distillation.cells import Cell, cells, expert_key, parse_cell, parse_expert
from synthfactory.ops.evaluation.arms import TrainingData, filtered_arm, real_arm, synthetic_arm
from synthfactory.ops.storage.atomic import TEMP_PREFIX
from synthfactory.params import Params, config_digest
from synthfactory.resources.store import ArtifactStore

CELLS = "cells"
# One partition per run: see the docstring of synthfactory.assets.distillation.
ONE_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def table(params: Params) -> list[Cell]:
    """The cells of the params, in the table's order (the first is the headline)."""
    config = params.distilled_set
    return cells(list(config.methods), list(config.ipcs), list(config.sources))


def source_data(store: ArtifactStore, source: str) -> TrainingData:
    """The images a cell (or an expert) learns from: the real train split, every synthetic
    image, or the filtered ones."""
    if source == "real":
        return real_arm(store.require("real_images"))
    if source == "synthetic":
        return synthetic_arm(store.require("synthetic_shards"))
    return filtered_arm(store.require("synthetic_shards"), store.require("filtered_set"))


def data_digest(data: TrainingData) -> str:
    """A short sha256 of a source's images and labels (part of every partition's inputs)."""
    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def judge_digest(store: ArtifactStore) -> str:
    """The judge's weights digest (a trained judge) or directory digest (CLIP)."""
    info = json.loads((store.require("judge") / "judge.json").read_text())
    return str(info.get("sha256") or info["digest"])


def expert_digest(params: Params, data: TrainingData, seed: int, index: int) -> str:
    """What one expert's bytes depend on. The number of experts is left out: adding experts
    keeps the finished ones."""
    distill = params.distilled_set
    return config_digest({"data": data_digest(data),
                          "expert_trajectories": params.expert_trajectories.model_dump(
                              exclude={"experts"}),
                          "dsa": distill.dsa.model_dump(), "architecture": distill.architecture,
                          "width": distill.eval.width, "seed": seed, "index": index})


def dsa_of(params: Params) -> Any:
    """The differentiable siamese augmentation of `distilled_set.dsa` (torch: imported here)."""
    from synthfactory.ops.distillation.dsa import DSA

    return DSA(strategy=params.distilled_set.dsa.strategy, fill=params.distilled_set.dsa.fill)


def partition_cells(context: dg.AssetExecutionContext, cell_table: list[Cell]) -> list[Cell]:
    """The cells this run makes; a key the run's params do not have is bad input."""
    by_key = {cell.key: cell for cell in cell_table}
    unknown = [key for key in context.partition_keys if key not in by_key]
    if unknown:
        raise ValueError(f"cells {unknown} are not in this run's distilled_set.methods × ipcs × "
                         f"sources ({', '.join(by_key)}): reload the code location after "
                         "changing them, or give a cell of the table")
    return [by_key[key] for key in context.partition_keys]


def prune_partitions(context: dg.AssetExecutionContext, store: ArtifactStore, root: Sequence[str],
                     current: Sequence[str], owned: Callable[[Path], str | None]) -> None:
    """Remove what partitions the params no longer have from `store.path(*root)` (the asset's
    directory holds the table the params ask for, as a whole-directory publish did before the
    asset was partitioned, and as DVC records it). `owned(entry)` is the partition key a
    directory entry holds, None for what is no partition's; temporaries of runs in progress
    stay."""
    keep = set(current) | set(context.assets_def.partitions_def.get_partition_keys())
    # An object store that holds the asset committed as one unit (before it was partitioned)
    # would serve that unit instead of the partitions published since: withdraw its commit.
    store.retract(root[0])
    directory = store.path(*root)
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        key = owned(entry)
        if entry.name.startswith(TEMP_PREFIX) or key is None or key in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        store.retract(*entry.relative_to(store.local_root).parts)
        context.log.info(f"{root[0]}: removed {entry.name}, which the params no longer have")


def cell_of(entry: Path) -> str | None:
    """The cell a directory under `cells/` holds (None for anything else)."""
    try:
        return parse_cell(entry.name).key if entry.is_dir() else None
    except ValueError:
        return None


def expert_of(entry: Path) -> str | None:
    """The expert an entry of `expert_trajectories/` holds. The unpartitioned layout's
    `<source>/` directories and `trajectories.json` are no current expert's: they go."""
    if entry.is_dir() or entry.name == "trajectories.json":
        return entry.name
    if entry.suffix != ".safetensors":
        return None
    try:
        parse_expert(entry.stem)
    except ValueError:
        return None
    return entry.stem


def load_experts(store: ArtifactStore, params: Params, cell: Cell, data: TrainingData,
                 seed: int) -> list[np.ndarray]:
    """The experts of a trajectory cell's source, each checked to come from these inputs."""
    from synthfactory.ops.distillation.cellstore import load_trajectory

    trajectories = []
    for index in range(params.expert_trajectories.experts):
        key = expert_key(cell.source, index)
        try:
            path = store.require("expert_trajectories", f"{key}.safetensors")
        except FileNotFoundError:
            raise FileNotFoundError(f"expert {key} of cell {cell.key} does not exist: "
                                    f"materialize expert_trajectories partition {key} first"
                                    ) from None
        trajectory, meta = load_trajectory(path)
        if meta.get("inputs_digest") != expert_digest(params, data, seed, index):
            raise ValueError(f"expert {key} ({path}) was trained on other data or settings "
                             f"than cell {cell.key} uses now: materialize expert_trajectories "
                             f"partition {key} first")
        trajectories.append(trajectory)
    return trajectories


