"""The scaling curve: nested seeded subsets, the power-law fit, the real-equivalent (measured,
extrapolated, unreachable) and its bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from synthfactory.ops.evaluation.scaling import (fit_power_law, nested_subsets,
                                                 real_equivalent_size, scaling_curve)


def test_subsets_are_nested_per_class_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 3, 40])
    subsets = nested_subsets(labels, [0.1, 0.3, 1.0], seed=0)
    small, middle, full = (set(subsets[f].tolist()) for f in (0.1, 0.3, 1.0))
    assert small <= middle <= full and full == set(range(len(labels)))
    # round(f·n) per class, at least one: class sizes 10, 20, 3, 40 at 0.3 → 3, 6, 1, 12.
    assert np.bincount(labels[subsets[0.3]]).tolist() == [3, 6, 1, 12]
    assert np.bincount(labels[subsets[0.1]]).tolist() == [1, 2, 1, 4]
    again = nested_subsets(labels, [0.1, 0.3, 1.0], seed=0)
    assert all(np.array_equal(subsets[f], again[f]) for f in subsets)
    assert not np.array_equal(nested_subsets(labels, [0.3], seed=1)[0.3], subsets[0.3])
    with pytest.raises(ValueError, match=r"\[0.0\] must be in \(0, 1\]"):
        nested_subsets(labels, [0.0], seed=0)


def test_the_fit_recovers_a_known_power_law() -> None:
    sizes = np.array([10.0, 30.0, 100.0, 300.0])
    error = 0.5 * sizes ** -0.7 + 0.01
    fit = fit_power_law(sizes, error)
    assert fit["a"] == pytest.approx(0.5, rel=1e-3) and fit["b"] == pytest.approx(0.7, rel=1e-3)
    assert fit["c"] == pytest.approx(0.01, abs=1e-4)
    with pytest.raises(ValueError, match="two or more sizes"):
        fit_power_law(np.array([10.0, 10.0]), np.array([0.1, 0.2]))


def test_real_equivalent_measured_extrapolated_and_unreachable() -> None:
    sizes = np.array([10.0, 100.0])
    fit = {"a": 0.5, "b": 0.5, "c": 0.01}
    # A measured point passes the real arm: log-linear interpolation (0.9 → 0.96 over 10 → 100,
    # 0.93 is half way in log N: 10^1.5).
    value, how = real_equivalent_size(sizes, np.array([0.9, 0.96]), fit, 0.93)
    assert how == "measured" and value == pytest.approx(10 ** 1.5)
    # None does: the fit's N at error 0.02 is (0.5 / (0.02 - 0.01))^2 = 2500.
    value, how = real_equivalent_size(sizes, np.array([0.9, 0.96]), fit, 0.98)
    assert how == "extrapolated" and value == pytest.approx(2500)
    # The fitted floor c is above the real arm's error: never.
    assert real_equivalent_size(sizes, np.array([0.9, 0.96]), {**fit, "c": 0.05}, 0.98) == (
        None, "unreachable")


def _points(noise: float) -> list[dict]:
    generator = np.random.default_rng(0)
    return [{"fraction": f, "images_per_class": n, "n_train": int(10 * n),
             "accuracies": (1 - (0.5 * n ** -0.7 + 0.01) + generator.normal(0, noise, 3)).tolist()}
            for f, n in ((0.1, 10.0), (0.3, 30.0), (1.0, 100.0))]


def test_scaling_curve_is_deterministic_and_its_interval_brackets_the_estimate() -> None:
    points = _points(noise=0.003)
    curve = scaling_curve(points, real_accuracy=0.975, real_images_per_class=120.0, seed=0)
    assert curve == scaling_curve(points, 0.975, 120.0, seed=0)  # seeded bootstrap
    assert [p["images_per_class"] for p in curve["points"]] == [10.0, 30.0, 100.0]
    assert all(p["accuracy_std"] > 0 for p in curve["points"])
    equivalent = curve["real_equivalent"]
    assert equivalent["how"] == "extrapolated"
    low, high = equivalent["interval_95"]
    assert low <= equivalent["images_per_class"] and (high is None
                                                      or equivalent["images_per_class"] <= high)
    for key in ("a", "b", "c"):
        lo, hi = curve["fit_interval_95"][key]
        assert lo <= hi
    # Without a real arm there is nothing to be equivalent to.
    assert scaling_curve(points, None, None, seed=0)["real_equivalent"] is None
