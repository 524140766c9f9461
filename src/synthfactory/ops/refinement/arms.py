"""The data and the results of the refinement arms: base set + each round's extra shards, and a
classifier directory's accuracy per class on one split (validation for plans, test for the
report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.evaluation.arms import TrainingData
from synthfactory.ops.evaluation.metrics import (accuracy, confusion_matrix, mean_per_class,
                                                 mean_std, per_class_accuracy)
from synthfactory.ops.storage.shards import finished_shards, read_samples
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import load_classifier


def extra_shards(directory: Path, arm: str) -> list[Path]:
    """The finished shards of one arm (`refined`, `targeted_base`, `uniform_plan`, `uniform`) in
    a `refined_shards` directory (`uniform-*.tar` does not match `uniform_plan-*.tar`)."""
    return finished_shards(directory, f"{arm}-*.tar")


def with_extras(base: TrainingData, round_dirs: Sequence[Path], arm: str) -> TrainingData:
    """The base arm's data plus the `arm` images of every round directory given (in order)."""
    images, labels, keys, sources = [base.images], [base.labels], list(base.keys), list(base.sources)
    for directory in round_dirs:
        shards = extra_shards(directory, arm)
        if not shards:
            raise FileNotFoundError(f"{directory} has no finished {arm} shards: materialize "
                                    f"'{directory.name}' (all partitions) first")
        samples = list(read_samples(shards))
        if samples:
            images.append(np.stack([s.image if s.image.ndim == 3 else s.image[:, :, None]
                                    for s in samples]))
            labels.append(np.asarray([s.label for s in samples], dtype=np.int64))
            keys += [s.key for s in samples]
        sources += [f"{directory.name}/{p.name}" for p in shards]
    all_labels = np.concatenate(labels)
    return TrainingData(np.concatenate(images), all_labels, all_labels, keys, sources)


def evaluate_classifiers(directory: Path, images: np.ndarray, labels: np.ndarray, n_classes: int,
                         device: torch.device) -> dict[str, Any]:
    """Accuracy of every `seed-*.safetensors` in `directory` on (images, labels): per seed, mean
    ± sample std, per class (mean over seeds), the confusion matrix summed over seeds, and the
    predicted labels (`predictions`: seeds × images, for paired comparisons; not JSON)."""
    checkpoints = sorted(directory.glob("seed-*.safetensors"))
    if not checkpoints:
        raise FileNotFoundError(f"{directory} holds no seed-*.safetensors: materialize "
                                f"'{directory.name}' first")
    accuracies, per_class, predictions = [], [], []
    confusion = np.zeros((n_classes, n_classes), np.int64)
    for checkpoint in checkpoints:
        model = load_classifier(checkpoint, device)
        predicted = predict_proba(model, images, device=device).argmax(1)
        predictions.append(np.asarray(predicted))
        accuracies.append(accuracy(predicted, labels))
        per_class.append(per_class_accuracy(predicted, labels, n_classes))
        confusion += confusion_matrix(predicted, labels, n_classes)
    mean, std = mean_std(accuracies)
    return {"accuracy_mean": mean, "accuracy_std": std, "seeds": len(accuracies),
            "accuracies": accuracies, "per_class_accuracy": mean_per_class(per_class),
            "confusion": confusion.tolist(), "predictions": np.stack(predictions)}
