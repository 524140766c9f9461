"""The classifiers of an evaluation arm as the report reads them: the seeds trained by
`ops/training/classifiers.py` and the arm's `history.json` (what it trained on, how, and each
seed's history). One function per kind of classifier asset: an arm of the registry, the
scaling curve's subsets, an arm of the closed loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.arms import HISTORY_JSON, TrainingData
from synthfactory.ops.storage.artifacts import Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.training.classifiers import Placement, train_seeds, train_shard_set
from synthfactory.ops.training.shardsets import ShardSet


def train_arm(arm: str, data: TrainingData | ShardSet, n_classes: int, config: Any,
              placement: Placement, directory: Path, label: str, work: Path, log: Log
              ) -> dict[str, Any]:
    """`config.n_seeds` classifiers of `arm` (`config`: the `classifiers` params section) on a
    set assembled in memory (one device) or a shard set (loaded, streamed or DDP; `work` is the
    DDP job's scratch directory), and `history.json`; the history."""
    if isinstance(data, TrainingData):
        histories = train_seeds(data.images, data.targets, n_classes, config, placement,
                                directory, label, log)
        record = {"n_train": len(data.images), "sources": data.sources,
                  "soft_labels": data.targets.ndim == 2, "streamed": False, "devices": 1}
    else:
        histories, streamed = train_shard_set(data, n_classes, config, placement, directory,
                                              label, work, log)
        record = {"n_train": data.n_samples, "sources": [shard.path.name for shard in data.shards],
                  "soft_labels": data.soft, "streamed": streamed, "devices": placement.devices}
    history = {"arm": arm, **record, "seeds": histories}
    (directory / HISTORY_JSON).write_text(dumps_json(history))
    return history


def train_scaling(data: TrainingData, subsets: dict[float, np.ndarray], n_classes: int,
                  config: Any, placement: Placement, directory: Path, label: str, log: Log
                  ) -> list[dict[str, Any]]:
    """The scaling curve's classifiers: `config.n_seeds` on each nested subset of `data`
    (fraction → indices), under `fraction-<f>/`, and `history.json`; its rows."""
    rows = []
    for fraction, chosen in subsets.items():
        subset = TrainingData(data.images[chosen], data.labels[chosen], data.targets[chosen],
                              [data.keys[i] for i in chosen], data.sources)
        histories = train_seeds(subset.images, subset.targets, n_classes, config, placement,
                                directory / f"fraction-{fraction:g}", f"{label} {fraction:g}",
                                log)
        rows.append({"fraction": fraction, "n_train": len(chosen),
                     "images_per_class": len(chosen) / n_classes, "seeds": histories})
    (directory / HISTORY_JSON).write_text(dumps_json({"fractions": rows}))
    return rows


def train_loop_arm(name: str, data: TrainingData, n_classes: int, config: Any,
                   placement: Placement, directory: Path, log: Log) -> list[dict[str, Any]]:
    """A closed-loop arm's classifiers (one arm of the 2×2: refined, targeted_base, uniform_plan
    or uniform), with the seeds of every other arm, and `history.json`; the seeds' histories."""
    histories = train_seeds(data.images, data.targets, n_classes, config, placement, directory,
                            name, log)
    (directory / HISTORY_JSON).write_text(dumps_json({
        "arm": name, "n_train": len(data.images), "sources": data.sources,
        "soft_labels": False, "seeds": histories}))
    return histories
