"""Coresets and distribution matching: shapes, determinism, behaviour, errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.distillation.coresets import check_method, select_herding, select_kcenter, select_random
from synthfactory.ops.distillation.matching import DmSettings, distribution_matching, matching_loss

CPU = torch.device("cpu")


def _labels() -> np.ndarray:
    return np.repeat(np.arange(3), 10)


@pytest.mark.parametrize("select", [
    lambda f, y: select_random(y, 3, seed=1), lambda f, y: select_herding(f, y, 3),
    lambda f, y: select_kcenter(f, y, 3, seed=1)])
def test_selections_return_ipc_per_class_deterministically(
        select: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    labels = _labels()
    features = np.random.default_rng(0).normal(size=(30, 5))
    chosen = select(features, labels)
    assert np.bincount(labels[chosen]).tolist() == [3, 3, 3]
    assert len(set(chosen.tolist())) == 9
    assert np.array_equal(chosen, select(features, labels))


def test_herding_tracks_the_class_mean_better_than_random() -> None:
    generator = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    features = generator.normal(size=(200, 8)) + labels[:, None]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)

    def error(chosen: np.ndarray) -> float:
        return float(np.mean([np.linalg.norm(unit[labels == c].mean(0) -
                                             unit[chosen][labels[chosen] == c].mean(0))
                              for c in range(4)]))

    herding = error(select_herding(features, labels, 5))
    randoms = np.mean([error(select_random(labels, 5, seed)) for seed in range(10)])
    assert herding < randoms / 2


def test_kcenter_covers_the_extremes() -> None:
    points = np.array([[0.0, 1.0], [0.05, 1.0], [1.0, 0.0], [1.0, 0.05], [0.7, 0.7]])
    chosen = select_kcenter(points, np.zeros(5, np.int64), 3, seed=0)
    assert 4 in chosen  # the centre start
    assert {0, 1} & set(chosen.tolist()) and {2, 3} & set(chosen.tolist())


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="class 0 has 10 samples.*ipc = 11"):
        select_random(_labels(), 11, seed=0)
    with pytest.raises(ValueError, match="'gm', not one of random, herding, kcenter, dm, dc, mtt"):
        check_method("gm")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits(8, 1)
    keep = data.labels < 3
    return data.images[keep][:150], data.labels[keep][:150]


def test_dm_lowers_the_matching_loss(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    init = select_random(labels, 2, seed=3)
    result = distribution_matching(
        images, labels, 3, 2, DmSettings(iterations=40, batch_real=64, width=32), seed=0,
        device=CPU, init_indices=init)
    distilled, distilled_labels, history = result.images, result.labels, result.history
    assert distilled.shape == (6, 1, 8, 8) and distilled.dtype == np.float32
    assert distilled_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert history["final_loss"] < history["initial_loss"]

    def yardstick(candidate: np.ndarray) -> float:
        return matching_loss(images, labels, candidate, distilled_labels, 3, seed=9, n_nets=4,
                             device=CPU, width=32)

    assert yardstick(distilled) < yardstick(images[init])


def test_dm_is_deterministic(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    settings = DmSettings(iterations=3, batch_real=16, width=16)
    runs = [distribution_matching(images, labels, 3, 1, settings, seed=2, device=CPU).images
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_kcenter_never_picks_a_sample_twice() -> None:
    """Duplicates leave every remaining distance at 0: the old argmax re-picked the start."""
    points = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    chosen = select_kcenter(points, np.zeros(5, np.int64), 4, seed=0)
    assert len(set(chosen.tolist())) == 4


def test_dm_keeps_float_images_without_a_clamp(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """The shipped dm clamped to [-1, 1] every step; a large step must now leave the range."""
    images, labels = digits
    result = distribution_matching(
        images, labels, 3, 1, DmSettings(iterations=5, batch_real=32, width=16,
                                         learning_rate=200.0), seed=0, device=CPU)
    assert np.abs(result.images).max() > 1.0
