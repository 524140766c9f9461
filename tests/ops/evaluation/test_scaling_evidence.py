"""Scaling as evidence: a fit only with residual degrees of freedom, its goodness of fit, the
real curve and the exchange rate (how many real images per class the synthetic set is worth)
with its bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from synthfactory.ops.evaluation.comparisons import ArmCorrectness
from synthfactory.ops.evaluation.scaling import (BEYOND, EXTRAPOLATED, INTERPOLATED,
                                                 fit_with_evidence, invert_curve,
                                                 monotone_curve, nested_subsets,
                                                 scaling_evidence)


def _accuracy(n: np.ndarray | float) -> np.ndarray:
    return 1.0 - (0.5 * np.asarray(n, np.float64) ** -0.7 + 0.01)


def test_a_fit_is_refused_below_five_sizes_and_given_with_its_goodness_of_fit() -> None:
    sizes = [3.0, 6.0, 12.0, 25.0, 50.0, 100.0]
    for count in (3, 4):
        evidence = fit_with_evidence(sizes[:count], _accuracy(sizes[:count]))
        assert evidence["fit"] is None and evidence["gof"] is None
        assert f"{count} sizes leave {count - 3} residual degrees of freedom" in evidence["no_fit"]
    noise = np.random.default_rng(0).normal(0, 2e-4, len(sizes))
    evidence = fit_with_evidence(sizes, _accuracy(sizes) + noise)
    fit, gof = evidence["fit"], evidence["gof"]
    assert evidence["no_fit"] is None and gof["residual_dof"] == 3
    assert fit["a"] == pytest.approx(0.5, rel=0.05) and fit["b"] == pytest.approx(0.7, rel=0.05)
    assert fit["c"] == pytest.approx(0.01, abs=2e-3)
    assert gof["r2"] > 0.999 and gof["rse"] < 5e-4
    five = fit_with_evidence(sizes[:5], _accuracy(sizes[:5]))
    assert five["gof"]["residual_dof"] == 2 and five["gof"]["rse"] < 1e-6


def test_invert_curve_pools_dips_and_names_the_range() -> None:
    assert monotone_curve(np.array([0.5, 0.7, 0.6, 0.9])).tolist() == pytest.approx(
        [0.5, 0.65, 0.65, 0.9])
    sizes = np.array([10.0, 100.0, 1000.0])
    value, how = invert_curve(sizes, np.array([0.9, 0.96, 0.97]), 0.93)
    assert how == INTERPOLATED and value == pytest.approx(10 ** 1.5)
    assert invert_curve(sizes, np.array([0.9, 0.96, 0.97]), 0.99) == (None, BEYOND)
    value, how = invert_curve(sizes, np.array([0.9, 0.96, 0.97]), 0.98,
                              {"a": 0.5, "b": 0.5, "c": 0.01})
    assert how == EXTRAPOLATED and value == pytest.approx(2500)


def _curve(sizes: list[float], shift: float, prefix: str, uniforms: np.ndarray
           ) -> list[tuple[float, ArmCorrectness]]:
    """Points whose classifiers get image i right when its uniform is below the accuracy at
    size/shift: the same images and seeds for every point (nested, strongly paired)."""
    return [(size, ArmCorrectness(f"{prefix}-{size:g}", uniforms < _accuracy(size / shift)))
            for size in sizes]


def test_the_exchange_rate_recovers_a_known_answer_within_its_interval() -> None:
    generator = np.random.default_rng(0)
    # Synthetic at N per class is worth real at N / 4: at 40 synthetic, 10 real. Each curve's
    # classifiers err on their own images (independent uniforms), so the interval has width.
    synthetic = _curve([10.0, 20.0, 40.0, 80.0, 160.0], 4.0, "synthetic",
                       generator.random((1, 3, 2000)))
    real = _curve([2.5, 5.0, 10.0, 20.0, 40.0, 80.0], 1.0, "real", generator.random((1, 3, 2000)))
    result = scaling_evidence(synthetic, real, priced_size=40.0, draws=300, seed=0)
    rate = result["exchange_rate"]
    assert rate["how"] == INTERPOLATED
    low, high = rate["ci95"]
    assert low < 10.0 < high and high - low > 1.0
    assert rate["real_images_per_class"] == pytest.approx(10, rel=0.15)
    assert rate["real_per_synthetic"] == pytest.approx(0.25, rel=0.15)
    assert result["fit"] is not None and result["gof"]["residual_dof"] == 2
    assert result["real_curve"]["gof"]["residual_dof"] == 3
    assert [p["images_per_class"] for p in result["real_curve"]["points"]] == [
        2.5, 5.0, 10.0, 20.0, 40.0, 80.0]
    # The converse: real at 80 per class is matched by synthetic at 320, beyond the measured
    # synthetic sizes: extrapolated with the synthetic fit.
    equivalent = result["real_equivalent"]
    assert equivalent["how"] == EXTRAPOLATED
    low, high = equivalent["ci95"]
    assert low <= 320 <= (high or np.inf)
    assert result == scaling_evidence(synthetic, real, priced_size=40.0, draws=300, seed=0)


def test_beyond_the_measured_range_without_a_fit() -> None:
    uniforms = np.random.default_rng(1).random((1, 3, 1000))
    synthetic = _curve([10.0, 20.0, 40.0], 1.0, "synthetic", uniforms)
    real = _curve([2.0, 4.0, 8.0, 16.0], 4.0, "real", uniforms)  # real worse than all synthetic
    result = scaling_evidence(synthetic, real, draws=200)
    assert result["fit"] is None and "3 sizes leave 0 residual" in result["no_fit"]
    assert result["real_curve"]["fit"] is None
    rate = result["exchange_rate"]
    assert rate["how"] == BEYOND and rate["real_images_per_class"] is None
    assert rate["ci95"][1] is None and rate["beyond_fraction"] > 0.9
    assert rate["measured_real_range"] == [2.0, 16.0]
    # Without a real curve there is no exchange rate, only the synthetic points.
    alone = scaling_evidence(synthetic, None, draws=50)
    assert alone["exchange_rate"] is None and alone["real_curve"] is None
    with pytest.raises(ValueError, match="priced_size 15 is not a measured synthetic size"):
        scaling_evidence(synthetic, real, priced_size=15.0, draws=50)
    with pytest.raises(ValueError, match="two or more sizes"):
        scaling_evidence(synthetic[:1], real, draws=50)


def test_the_real_curve_subsets_are_nested_and_their_own_stream() -> None:
    labels = np.repeat(np.arange(3), 40)
    fractions = [0.05, 0.1, 0.25, 0.5, 1.0]
    real = nested_subsets(labels, fractions, seed=0, stream="scaling-real")
    assert all(set(real[a]) <= set(real[b]) for a, b in zip(fractions[:-1], fractions[1:], strict=True))
    assert not np.array_equal(real[0.5], nested_subsets(labels, fractions, seed=0)[0.5])
