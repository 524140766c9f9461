"""Paired bootstrap intervals and verdicts: the interval covers a known truth at its nominal
rate on simulated predictions, clear cases get clear verdicts, pairing narrows the interval, and
bad inputs fail loudly."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import norm

from synthfactory.ops.evaluation.comparisons import (ArmCorrectness, arm_interval,
                                                     bootstrap_accuracies, compare,
                                                     percentile_interval, shared_replicates)


def _experiment(generator: np.random.Generator, mu: tuple[float, float], n_images: int = 539,
                replicates: int = 2, seeds: int = 3, sd_image: float = 1.2,
                sd_replicate: float = 0.2, sd_seed: float = 0.12, churn: float = 0.5,
                ) -> tuple[ArmCorrectness, ArmCorrectness]:
    """Two arms on one sample of test images from a population.

    Image i is right for classifier (r, s) of arm a when
    mu_a + v_ar + u_as + d_i > e_arsi: d_i the image's easiness (shared by both arms), v the
    replicate effect (a part shared by the two arms of a replicate, a part each arm's own), u
    the seed effect (correlated between the arms' seed k), e the classifier's own noise on the
    image (correlated between the arms: `churn`).
    """
    ids = tuple(f"r{i}" for i in range(replicates))
    easiness = generator.normal(0, sd_image, n_images)
    replicate = generator.normal(0, sd_replicate, replicates) + generator.normal(
        0, sd_replicate, (2, replicates))
    seed = 0.5 * generator.normal(0, sd_seed, seeds) + np.sqrt(0.75) * generator.normal(
        0, sd_seed, (2, seeds))
    noise = churn * generator.normal(size=(replicates, seeds, n_images)) + np.sqrt(
        1 - churn ** 2) * generator.normal(size=(2, replicates, seeds, n_images))
    correct = (np.asarray(mu)[:, None, None, None] + replicate[:, :, None, None]
               + seed[:, None, :, None] + easiness) > noise
    return ArmCorrectness("a", correct[0], ids), ArmCorrectness("b", correct[1], ids)


def _truth(mu: tuple[float, float], sd_image: float = 1.2, sd_replicate: float = 0.2,
           sd_seed: float = 0.12) -> float:
    """The population difference: E Φ(mu + Z) = Φ(mu / sqrt(1 + var Z)) for normal Z."""
    scale = np.sqrt(1 + sd_image ** 2 + 2 * sd_replicate ** 2 + sd_seed ** 2)
    return float(norm.cdf(mu[0] / scale) - norm.cdf(mu[1] / scale))


@pytest.mark.parametrize("mu", [(4.0, 3.7), (3.8, 3.8)], ids=["true-gap", "zero-gap"])
def test_the_interval_covers_the_population_difference_at_about_95_percent(mu) -> None:
    # 200 simulated experiments at the embedded digits' scale (539 test images, ~98% accuracy,
    # 2 replicates × 3 seeds); each a fresh image sample, replicates and seeds.
    generator = np.random.default_rng(7)
    truth = _truth(mu)
    hits = 0
    for _ in range(200):
        a, b = _experiment(generator, mu)
        values = bootstrap_accuracies([a, b], draws=400, generator=generator)
        low, high = percentile_interval(values[:, 0] - values[:, 1])
        hits += low <= truth <= high
    print(f"coverage {mu}: {hits}/200 (truth {truth:.4f})")
    assert 180 <= hits <= 198


def test_verdicts_on_clear_cases_and_the_entry_names_what_it_covers() -> None:
    generator = np.random.default_rng(0)
    base = generator.random((2, 3, 539))
    good = ArmCorrectness("good", base < 0.99, ("r1", "r2"))
    bad = ArmCorrectness("bad", base < 0.90, ("r1", "r2"))
    result = compare(good, bad, draws=500, seed=0)
    assert result["verdict"] == "better" and result["ci95"][0] > 0
    assert result["difference"] == pytest.approx(good.accuracy - bad.accuracy, abs=1e-6)
    assert compare(bad, good, draws=500)["verdict"] == "worse"
    same = compare(good, ArmCorrectness("copy", base < 0.99, ("r1", "r2")), draws=500)
    assert same["verdict"] == "indistinguishable" and same["ci95"] == [0.0, 0.0]
    assert result["covers"] == ["replicates", "classifier seeds", "test images"]
    assert result["paired"] == ["replicates", "classifier seeds", "test images"]
    assert result == compare(good, bad, draws=500, seed=0)  # seeded
    assert result != compare(good, bad, draws=500, seed=1)
    # One replicate everywhere: the entry says plainly that replicates are not covered.
    single = compare(ArmCorrectness("x", base[:1] < 0.99), ArmCorrectness("y", base[:1] < 0.9),
                     draws=200)
    assert single["covers"] == ["classifier seeds", "test images"]
    assert single["not_covered"][0].startswith("replicates: one draw")
    interval = arm_interval(good, draws=500)
    assert interval["ci95"][0] < interval["accuracy"] < interval["ci95"][1]


def test_pairing_narrows_the_interval_of_correlated_arms() -> None:
    generator = np.random.default_rng(1)
    easiness = generator.normal(0, 1.5, 539)
    noise = generator.normal(size=(2, 3, 539))
    a = ArmCorrectness("a", 2.3 + easiness > noise, ("r1", "r2"))
    b = ArmCorrectness("b", 2.2 + easiness > noise + 0.1 * generator.normal(size=noise.shape),
                       ("r1", "r2"))
    paired = np.subtract(*compare(a, b, draws=1000)["ci95"][::-1])
    # Unpaired: b's replicates, seeds and images resampled independently of a's.
    generator = np.random.default_rng(2)
    b_alone = ArmCorrectness("b", b.correct, ("q1", "q2"))
    values_a = bootstrap_accuracies([a], draws=1000, generator=generator)[:, 0]
    values_b = bootstrap_accuracies([b_alone], draws=1000, generator=generator)[:, 0]
    unpaired = np.subtract(*percentile_interval(values_a - values_b)[::-1])
    assert paired < 0.5 * unpaired


def test_mixed_replicate_structures() -> None:
    generator = np.random.default_rng(3)
    synthetic = ArmCorrectness("synthetic", generator.random((2, 3, 50)) < 0.9, ("r2", "r1"))
    real = ArmCorrectness("real", generator.random((1, 3, 50)) < 0.9, ("real",))
    assert compare(synthetic, real, draws=100)["paired"] == ["classifier seeds", "test images"]
    other = ArmCorrectness("other", generator.random((2, 3, 50)) < 0.9, ("r1", "r3"))
    with pytest.raises(ValueError, match="overlap without being equal"):
        compare(synthetic, other, draws=100)
    left, right = shared_replicates(synthetic, other)
    assert left.replicate_ids == right.replicate_ids == ("r1",)
    assert np.array_equal(left.correct[0], synthetic.correct[1])
    # Different seed counts: seeds resampled for each arm on its own.
    five = ArmCorrectness("five", generator.random((1, 5, 50)) < 0.9)
    assert compare(real, five, draws=100)["paired"] == ["test images"]


def test_bad_inputs_fail_loudly() -> None:
    ok = np.ones((1, 3, 10), dtype=bool)
    with pytest.raises(ValueError, match="dtype int64; expected a boolean"):
        ArmCorrectness("a", ok.astype(np.int64))
    with pytest.raises(ValueError, match=r"shape \(3, 10\); expected \(replicates"):
        ArmCorrectness("a", ok[0])
    with pytest.raises(ValueError, match="at least one replicate, seed and test image"):
        ArmCorrectness("a", np.ones((1, 3, 0), dtype=bool))
    with pytest.raises(ValueError, match="2 replicate_ids"):
        ArmCorrectness("a", ok, ("r1", "r2"))
    with pytest.raises(ValueError, match="repeat an id"):
        ArmCorrectness("a", np.ones((2, 3, 10), dtype=bool), ("r1", "r1"))
    with pytest.raises(ValueError, match=r"different numbers of test images \{'a': 10, 'b': 9\}"):
        compare(ArmCorrectness("a", ok), ArmCorrectness("b", ok[:, :, :9]))
    with pytest.raises(ValueError, match="against itself"):
        compare(ArmCorrectness("a", ok), ArmCorrectness("a", ok))
    with pytest.raises(ValueError, match="level 95"):
        arm_interval(ArmCorrectness("a", ok), level=95)
    with pytest.raises(ValueError, match="predictions of shape"):
        ArmCorrectness.from_predictions("a", np.zeros((3, 9)), np.zeros(10))
    arm = ArmCorrectness.from_predictions("a", np.zeros((3, 10)), np.arange(10) % 2)
    assert arm.shape == (1, 3, 10) and arm.accuracy == 0.5


def test_a_2000_draw_comparison_is_fast() -> None:
    generator = np.random.default_rng(4)
    a = ArmCorrectness("a", generator.random((2, 3, 539)) < 0.98, ("r1", "r2"))
    b = ArmCorrectness("b", generator.random((2, 3, 539)) < 0.97, ("r1", "r2"))
    start = time.perf_counter()
    compare(a, b, draws=2000)
    assert time.perf_counter() - start < 1.0
