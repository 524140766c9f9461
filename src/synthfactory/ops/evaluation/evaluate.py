"""Scoring what was trained: every seed of an arm on the real test split (the final numbers) and
on the validation split (what choices read), and the CLIP judge's zero-shot reference row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.curation.judges import ClipJudge, load_judge
from synthfactory.ops.evaluation.metrics import (accuracy, confusion_matrix, mean_per_class,
                                                 mean_std, per_class_accuracy)
from synthfactory.ops.training import HISTORY_JSON
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import load_classifier

# What the spread of every arm covers (the report says it beside the table).
SPREAD = ("sample standard deviation (ddof 1) over an arm's classifiers: its seeds, and for the "
          "arms trained on generated images the seeds of every replicate (`replicates`: "
          "independent draws of the prompts' seeds, shards, scores and filter); the distilled "
          "set and the generator's weights are one draw; the 95% intervals also resample the "
          "test images")


@dataclass(frozen=True)
class Split:
    """Images, labels and sample keys of one real split."""

    images: np.ndarray
    labels: np.ndarray
    keys: tuple[str, ...] = ()


def checkpoints(directory: Path) -> list[Path]:
    """The `seed-<k>.safetensors` files of a classifier directory, in seed order."""
    found = sorted(directory.glob("seed-*.safetensors"),
                   key=lambda path: int(path.stem.removeprefix("seed-")))
    if not found:
        raise FileNotFoundError(f"{directory} holds no seed-<k>.safetensors: materialize "
                                f"'{directory.name}' first")
    return found


def trained_steps(directory: Path) -> int:
    """The optimizer steps a finished classifier asset's seeds ran (its history.json; every
    seed of an arm runs the same): what a sweep trains to be equal in compute with it."""
    history = directory / HISTORY_JSON
    if not history.is_file():
        raise FileNotFoundError(f"{history} is missing: materialize '{directory.name}' first")
    return int(json.loads(history.read_text())["seeds"][0]["steps"])


def score_predictions(predictions: list[np.ndarray], test: Split, n_classes: int
                      ) -> dict[str, Any]:
    """Test accuracy (mean ± sample std over seeds), per-class accuracy and summed confusion."""
    accuracies = [accuracy(p, test.labels) for p in predictions]
    mean, std = mean_std(accuracies)
    confusion = sum(confusion_matrix(p, test.labels, n_classes) for p in predictions)
    return {"accuracy_mean": mean, "accuracy_std": std, "seeds": len(accuracies),
            "accuracies": accuracies,
            "per_class_accuracy": mean_per_class([per_class_accuracy(p, test.labels, n_classes)
                                                  for p in predictions]),
            "confusion": np.asarray(confusion).tolist()}


@dataclass(frozen=True)
class Scored:
    """An arm's metrics.json row and its test predictions (seeds × test images), which the
    report's intervals and comparisons resample (they stay out of metrics.json)."""

    row: dict[str, Any]
    predictions: np.ndarray


def evaluate_classifiers(paths: list[Path], test: Split, val: Split | None, n_classes: int,
                         device: torch.device) -> Scored:
    """Every checkpoint on the test split, and on the validation split when there is one."""
    test_predictions, val_accuracies = [], []
    for path in paths:
        model = load_classifier(path, device)
        test_predictions.append(predict_proba(model, test.images, device=device).argmax(1))
        if val is not None:
            val_accuracies.append(accuracy(
                predict_proba(model, val.images, device=device).argmax(1), val.labels))
    row = score_predictions(test_predictions, test, n_classes)
    if val is not None:
        row["val_accuracy_mean"], row["val_accuracy_std"] = mean_std(val_accuracies)
    return Scored(row, np.stack(test_predictions))


def zero_shot_row(judge_dir: Path, test: Split, val: Split | None, n_classes: int,
                  device: torch.device, batch_size: int) -> Scored:
    """The CLIP judge's zero-shot accuracy: no training, so one 'seed' and no spread."""
    judge = load_judge(judge_dir, device, batch_size)
    if not isinstance(judge, ClipJudge):
        raise ValueError("the zero_shot arm needs judge.backend: clip (the ConvNet judge is "
                         "trained on the real images: it is no zero-shot reference)")
    predictions = judge.predict_proba(test.images).argmax(1)
    row = score_predictions([predictions], test, n_classes)
    if val is not None:
        row["val_accuracy_mean"] = accuracy(judge.predict_proba(val.images).argmax(1), val.labels)
        row["val_accuracy_std"] = 0.0
    return Scored({"n_train": 0, **row}, predictions[None])
