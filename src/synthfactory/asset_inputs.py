"""What the asset modules read of the later stages' sets, shared in one place that each of them
imports: the images a distillation cell or an expert learns from, the cells and experts of a
run, and the classifiers' training budgets. Kept apart from `synthfactory.publishing` so that
an early asset (the generator, the shards) does not carry these modules in its code
dependencies: dvc.yaml would re-run it when the filter or the arms change.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from synthfactory.ops.distillation.cells import Cell, cells
from synthfactory.ops.evaluation.arms import TrainingData, filtered_arm, real_arm, synthetic_arm
from synthfactory.ops.evaluation.budgets import compared_budgets, planned_sizes
from synthfactory.ops.training.recipes import recipe_for
from synthfactory.params import Params
from synthfactory.resources.store import ArtifactStore


def classifier_budgets(params: Params, store: ArtifactStore) -> dict[str, Any]:
    """The training budget of every compared arm and the shared `reference` (the scaling
    curve's and the closed loop's), planned from the real images and the prompts' count
    (ops/evaluation/budgets.py); the recipe's batch size caps a step's images."""
    config = params.classifiers
    sizes = planned_sizes(store.require("real_images"), params.prompts.images_per_class,
                          params.retrieval.per_class)
    batch = recipe_for(config.architecture, learning_rate=config.learning_rate,
                       batch_size=config.batch_size, weight_decay=config.weight_decay,
                       label_smoothing=config.label_smoothing).batch_size
    return compared_budgets(config.arms, sizes, policy=config.budget, epochs=config.epochs,
                            min_steps=config.min_steps, batch_size=batch)


def cell_table(params: Params) -> list[Cell]:
    """The cells of the params' distillation table, in its order (the first is the headline)."""
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


def partition_cells(context: dg.AssetExecutionContext, table: list[Cell]) -> list[Cell]:
    """The cells this run makes; a key the run's params do not have is bad input."""
    by_key = {cell.key: cell for cell in table}
    unknown = [key for key in context.partition_keys if key not in by_key]
    if unknown:
        raise ValueError(f"cells {unknown} are not in this run's distilled_set.methods × ipcs × "
                         f"sources ({', '.join(by_key)}): reload the code location after "
                         "changing them, or give a cell of the table")
    return [by_key[key] for key in context.partition_keys]


def distillation_width(params: Params) -> int:
    """The ConvNet width of distillation, its experts and its evaluation networks:
    `distilled_set.eval.width`, else the classifiers' (`classifiers.width`, else the one the
    resolution gives every classifier: `architectures.resolved_width`)."""
    from synthfactory.ops.training.architectures import resolved_width  # deferred: torch

    return resolved_width(params.distilled_set.eval.width or params.classifiers.width,
                          params.real_images.resolution)


def expert_recipe(params: Params) -> dict[str, Any]:
    """What every expert's bytes depend on besides its data, seed and index
    (`ops.distillation.partitions.expert_digest`): the expert_trajectories settings but the
    number of experts (adding experts keeps the finished ones), DSA, architecture and width."""
    distill = params.distilled_set
    return {"expert_trajectories": params.expert_trajectories.model_dump(exclude={"experts"}),
            "dsa": distill.dsa.model_dump(), "architecture": distill.architecture,
            "width": distillation_width(params)}


def partition_experts(context: dg.AssetExecutionContext, wanted: list[str]) -> list[str]:
    """The experts this run trains; a key the run's params do not need is bad input."""
    unknown = [key for key in context.partition_keys if key not in wanted]
    if unknown:
        raise ValueError(f"experts {unknown} are not what this run's params need "
                         f"({', '.join(wanted) or 'none: no mtt/datm cell'}): reload the "
                         "code location after changing distilled_set or expert_trajectories")
    return list(context.partition_keys)
