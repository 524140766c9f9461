"""Classifier training: augmentation, learning, soft labels, determinism, safetensors I/O, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.evaluation.metrics import (
    accuracy,
    confusion_matrix,
    mean_per_class,
    mean_std,
    per_class_accuracy,
)
from synthfactory.ops.training.augmentation import augment
from synthfactory.ops.training.predict import embed, predict_proba
from synthfactory.ops.training.train import (ClassifierSettings, load_classifier,
                                             save_classifier, train_classifier)

CPU = torch.device("cpu")


def quadrant_images(per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 classes of 8×8 grey images, each with a different bright quadrant, plus noise."""
    generator = np.random.default_rng(seed)
    images, labels = [], []
    for label, (row, col) in enumerate([(0, 0), (0, 4), (4, 0)]):
        for _ in range(per_class):
            image = generator.integers(0, 40, (8, 8, 1), dtype=np.uint8)
            image[row:row + 4, col:col + 4] = 220
            images.append(image)
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    first = augment(images, torch.Generator().manual_seed(1), flip=False)
    again = augment(images, torch.Generator().manual_seed(1), flip=False)
    assert first.shape == images.shape and torch.equal(first, again)
    assert first.min() >= -1.0001 and first.max() <= 1.0001
    assert not torch.allclose(first, images)


def test_augment_never_flips_unless_asked() -> None:
    image = -torch.ones(64, 1, 8, 8)
    image[:, :, :, :2] = 1.0  # a bright bar on the left edge
    kept = augment(image, torch.Generator().manual_seed(0), flip=False)
    left, right = kept[..., :4].mean(), kept[..., 4:].mean()
    assert left > right + 0.3
    flipped = augment(image, torch.Generator().manual_seed(0), flip=True)
    assert (flipped[..., 4:].mean((1, 2, 3)) > flipped[..., :4].mean((1, 2, 3))).any()


def test_training_learns_a_separable_problem() -> None:
    images, labels = quadrant_images()
    settings = ClassifierSettings(epochs=1, min_steps=60, batch_size=32, width=16)
    model, history = train_classifier(images, labels, 3, settings, seed=0, device=CPU)
    assert history["train_accuracy"] >= 0.9 and history["steps"] == 60
    assert history["loss"][-1][1] < history["loss"][0][1]
    test_images, test_labels = quadrant_images(seed=1)
    assert accuracy(predict_proba(model, test_images, device=CPU).argmax(1), test_labels) >= 0.9


def test_history_counts_the_passes_the_loop_makes() -> None:
    """50 images in batches of 16: a pass is 3 full batches (2 images left out of each
    permutation), so 4 epochs are 12 steps, not 16 (the count with the partial batch)."""
    images, labels = quadrant_images(per_class=17)
    images, labels = images[:50], labels[:50]
    _, history = train_classifier(images, labels, 3, ClassifierSettings(
        epochs=4, min_steps=1, batch_size=16, width=8), seed=0, device=CPU)
    assert (history["steps"], history["steps_per_pass"], history["passes"]) == (12, 3, 4.0)
    assert history["left_out_per_pass"] == 2 and history["batch_size"] == 16
    assert history["samples_seen"] == 12 * 16  # images drawn: the cost table's images/s
    # min_steps decides for a small set: 10 steps are 3.33 passes.
    _, history = train_classifier(images, labels, 3, ClassifierSettings(
        epochs=1, min_steps=10, batch_size=16, width=8), seed=0, device=CPU)
    assert (history["steps"], history["passes"]) == (10, 3.33)


def test_soft_labels_train_too() -> None:
    images, labels = quadrant_images()
    soft = np.full((len(labels), 3), 0.05, np.float32)
    soft[np.arange(len(labels)), labels] = 0.9
    settings = ClassifierSettings(epochs=1, min_steps=60, batch_size=32, width=16)
    model, history = train_classifier(images, soft, 3, settings, seed=0, device=CPU)
    assert history["train_accuracy"] >= 0.9
    with pytest.raises(ValueError, match="soft targets have 2 columns"):
        train_classifier(images, soft[:, :2], 3, ClassifierSettings(), seed=0, device=CPU)


def test_training_is_deterministic_per_seed() -> None:
    images, labels = quadrant_images(per_class=8)
    settings = ClassifierSettings(epochs=1, min_steps=5, width=16)
    runs = [train_classifier(images, labels, 3, settings, seed=4, device=CPU)[0]
            for _ in range(2)]
    for (name, a), (_, b) in zip(runs[0].state_dict().items(), runs[1].state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    other = train_classifier(images, labels, 3, settings, seed=5, device=CPU)[0]
    assert not torch.equal(other.classifier.weight, runs[0].classifier.weight)


def test_save_and_load_give_identical_predictions(tmp_path: Path) -> None:
    images, labels = quadrant_images(per_class=8)
    model, _ = train_classifier(images, labels, 3, ClassifierSettings(
        epochs=1, min_steps=5, width=16), seed=0, device=CPU)
    save_classifier(tmp_path / "m.safetensors", model)
    loaded = load_classifier(tmp_path / "m.safetensors", CPU)
    np.testing.assert_array_equal(predict_proba(model, images, device=CPU),
                                  predict_proba(loaded, images, device=CPU))
    assert embed(loaded, images, device=CPU).shape == (24, model.embedding_dim)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_classifier(tmp_path / "missing.safetensors", CPU)


def test_metrics_on_a_hand_computed_example() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 1, 1, 1, 0])
    assert accuracy(predictions, labels) == pytest.approx(0.6)
    # Class 2 was tested and always missed (0.0); class 3 has no test image: no accuracy (None).
    assert per_class_accuracy(predictions, labels, 4) == [0.5, 1.0, 0.0, None]
    assert mean_per_class([[0.5, None, 1.0], [1.0, None, 0.0]]) == [0.75, None, 0.5]
    assert confusion_matrix(predictions, labels, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.2, 0.4])
    # The sample std (ddof 1), not the population std (0.1): 1.41x larger at two values.
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.1 * 2 ** 0.5)
