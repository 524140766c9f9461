"""The scaling curve's building blocks: nested seeded subsets and the power-law fit (the fit's
evidence, the real curve and the exchange rate: test_scaling_evidence.py)."""

from __future__ import annotations

import numpy as np
import pytest

from synthfactory.ops.evaluation.scaling import fit_power_law, nested_subsets


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
