"""The classifiers of an evaluation arm as the report reads them: the seeds trained by
`ops/training/classifiers.py` and the arm's `history.json` (what it trained on, how, and each
seed's history). One function per kind of classifier asset: an arm of the registry, the
scaling curve's subsets, an arm of the closed loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.arms import TrainingData
from synthfactory.ops.evaluation.evaluate import checkpoints
from synthfactory.ops.evaluation.scaling import REAL_STREAM, nested_subsets
from synthfactory.ops.storage.artifacts import Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.training import HISTORY_JSON
from synthfactory.ops.training.budget import Budget
from synthfactory.ops.training.classifiers import (Placement, classifier_seeds, train_seeds,
                                                   train_shard_set, training_settings)
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import ClassifierSettings, load_classifier, train_classifier
from synthfactory.ops.training.shardsets import ShardSet


def train_arm(arm: str, data: TrainingData | ShardSet, n_classes: int, config: Any,
              placement: Placement, directory: Path, label: str, work: Path, log: Log,
              budget: Budget, val: tuple[np.ndarray, np.ndarray] | None = None
              ) -> dict[str, Any]:
    """`config.n_seeds` classifiers of `arm` (`config`: the `classifiers` params section) on a
    set assembled in memory (one device) or a shard set (loaded, streamed or DDP; `work` is the
    DDP job's scratch directory), trained `budget`'s steps, and `history.json` (with the
    budget: policy, steps, images seen and why); the history. With the validation split `val`
    and `config.control_steps`, also the longer-trained control (`train_control`), recorded as
    history.json's `control`."""
    steps = _steps(budget)
    if isinstance(data, TrainingData):
        histories = train_seeds(data.images, data.targets, n_classes, config, placement,
                                directory, label, log, steps)
        record = {"n_train": len(data.images), "sources": data.sources,
                  "soft_labels": data.targets.ndim == 2, "streamed": False, "devices": 1}
    else:
        histories, streamed = train_shard_set(data, n_classes, config, placement, directory,
                                              label, work, log, steps)
        record = {"n_train": data.n_samples, "sources": [shard.path.name for shard in data.shards],
                  "soft_labels": data.soft, "streamed": streamed, "devices": placement.devices}
    history = {"arm": arm, **record, "budget": _record(budget, histories), "seeds": histories}
    if val is not None and config.control_steps and histories:
        history["control"] = train_control(data, n_classes, config, placement, directory,
                                           histories[0]["steps"], val, log)
    (directory / HISTORY_JSON).write_text(dumps_json(history))
    return history


def train_control(data: TrainingData | ShardSet, n_classes: int, config: Any,
                  placement: Placement, directory: Path, steps: int,
                  val: tuple[np.ndarray, np.ndarray], log: Log) -> dict[str, Any]:
    """The cheap control of a recipe's budget: the arm's first seed trained again with
    `config.control_steps` times its `steps` (in-process on one device, weights not kept), and
    its validation accuracy beside the arm's seeds' (their mean), measured on `val` (images,
    labels): an arm far below its own longer-trained copy was stopped before it learned its
    data (ops/evaluation/soundness.py)."""
    device = placement.device
    longer = int(round(config.control_steps * steps))
    settings = ClassifierSettings(**training_settings(config, device, longer))
    seed = classifier_seeds(placement.seed, 1)[0]
    if isinstance(data, TrainingData):
        model, history = train_classifier(data.images, data.targets, n_classes, settings,
                                          seed=seed, device=device)
    else:
        source = data.source(in_memory_mb=placement.in_memory_mb, seed=0,
                             workers=placement.workers, shuffle_buffer=placement.shuffle_buffer)
        model, history = train_classifier(source, None, n_classes, settings, seed=seed,
                                          device=device)
    images, labels = val
    control = _val_accuracy(model, images, labels, device)
    arm = [_val_accuracy(load_classifier(path, device), images, labels, device)
           for path in checkpoints(directory)]
    log(f"control: seed 0 at {longer} steps ({config.control_steps:g}x) reaches validation "
        f"accuracy {control:.4f}; the arm's seeds {np.mean(arm):.4f}")
    return {"factor": float(config.control_steps), "steps": longer, "seed_index": 0,
            "val_accuracy": control, "arm_val_accuracy": float(np.mean(arm)),
            "arm_val_accuracies": arm, "train_accuracy": history["train_accuracy"],
            "seconds": history["seconds"], "n_val": len(labels)}


def _val_accuracy(model: Any, images: np.ndarray, labels: np.ndarray, device: Any) -> float:
    return float(np.mean(predict_proba(model, images, device=device).argmax(1) == labels))


# The scaling curves' classifiers, under `<curve>/` beside history.json: the filtered set's
# subsets keep the top level (`fraction-<f>/`), the real train split's go under `real/`.
CURVE_DIRS = {"filtered": "", "real": "real"}


def train_scaling_curves(curves: dict[str, TrainingData], fractions: Sequence[float],
                         arms: Sequence[str], n_classes: int, config: Any, placement: Placement,
                         directory: Path, label: str, log: Log, budget: Budget,
                         seed: int) -> dict[str, list[dict[str, Any]]]:
    """Both scaling curves' classifiers — nested, seeded subsets of the filtered set and of the
    real train split (`curves`: curve → its full set) at each fraction — with the compared
    arms' steps, and `history.json` ({"fractions": filtered rows, "real_fractions": real rows,
    "budget"}). A fraction of 1.0 is left to the arm of the same data when it is configured
    (same data, recipe and seeds). The real subsets draw from a stream of their own
    (`scaling.REAL_STREAM`), so they do not reuse the filtered curve's permutations."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for curve, data in curves.items():
        own = [f for f in fractions if not (f == 1.0 and curve in arms)]
        stream = REAL_STREAM if curve == "real" else "scaling"
        subsets = nested_subsets(data.labels, own, seed, stream=stream)
        rows[curve] = _train_subsets(data, subsets, n_classes, config, placement,
                                     directory / CURVE_DIRS[curve], f"{label} {curve}", log,
                                     budget)
    (directory / HISTORY_JSON).write_text(dumps_json({
        "fractions": rows.get("filtered", []), "real_fractions": rows.get("real", []),
        "budget": asdict(budget)}))
    return rows


def _train_subsets(data: TrainingData, subsets: dict[float, np.ndarray], n_classes: int,
                   config: Any, placement: Placement, directory: Path, label: str, log: Log,
                   budget: Budget) -> list[dict[str, Any]]:
    """`config.n_seeds` classifiers on each subset (fraction → indices of `data`) under
    `directory/fraction-<f>/`; one row per fraction."""
    rows = []
    for fraction, chosen in subsets.items():
        histories = train_seeds(data.images[chosen], data.targets[chosen], n_classes, config,
                                placement, directory / f"fraction-{fraction:g}",
                                f"{label} {fraction:g}", log, _steps(budget))
        rows.append({"fraction": fraction, "n_train": len(chosen),
                     "images_per_class": len(chosen) / n_classes, "seeds": histories})
    return rows


def train_loop_arm(name: str, data: TrainingData, n_classes: int, config: Any,
                   placement: Placement, directory: Path, log: Log,
                   budget: Budget) -> list[dict[str, Any]]:
    """A closed-loop arm's classifiers (one arm of the 2×2: refined, targeted_base, uniform_plan
    or uniform), with the seeds and the steps (`budget`) of every other arm, and
    `history.json`; the seeds' histories."""
    histories = train_seeds(data.images, data.targets, n_classes, config, placement, directory,
                            name, log, _steps(budget))
    (directory / HISTORY_JSON).write_text(dumps_json({
        "arm": name, "n_train": len(data.images), "sources": data.sources,
        "soft_labels": False, "budget": _record(budget, histories), "seeds": histories}))
    return histories


def _steps(budget: Budget) -> int | None:
    """The steps to impose: a shared budget's; None lets each set's epochs decide."""
    return budget.steps if budget.policy == "equal_steps" else None


def _record(budget: Budget, histories: list[dict[str, Any]]) -> dict[str, Any]:
    """history.json's `budget`: the policy, why, and what the seeds ran (steps, images seen)."""
    return {"policy": budget.policy, "reason": budget.reason,
            "steps": histories[0]["steps"] if histories else budget.steps,
            "images_seen": histories[0]["samples_seen"] if histories else budget.images_seen}
