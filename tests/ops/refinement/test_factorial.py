"""The closed loop's 2×2: which difference credits what, with paired intervals and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from synthfactory.ops.refinement.factorial import (loop_comparisons, loop_correctness,
                                                   targeting_credit)

N, SEEDS = 600, 3


def _predictions(accuracy: dict[str, float], seed: int = 0) -> tuple[dict, np.ndarray]:
    """Seeds × images predictions: every arm misses the same hard images, plus its own misses."""
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 10, N)
    difficulty = generator.random((SEEDS, N))
    predictions = {}
    for arm, value in accuracy.items():
        wrong = difficulty > value
        predictions[arm] = np.where(wrong, (labels + 1) % 10, labels)
    return predictions, labels


def _by_pair(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(row["a"], row["b"]): row for row in rows}


def test_targeting_is_credited_only_at_the_same_recipe() -> None:
    """Here the recipe is worth 6 points and targeting nothing: the original control (refined −
    uniform) says "better", the two same-recipe targeting differences do not."""
    predictions, labels = _predictions({"refined": 0.96, "targeted_base": 0.90,
                                        "uniform_plan": 0.96, "uniform": 0.90})
    rows = loop_comparisons(loop_correctness(predictions, labels), draws=500)
    pairs = _by_pair(rows)
    assert pairs["refined", "uniform"]["verdict"] == "better"
    assert pairs["refined", "uniform_plan"]["difference"] == 0.0
    assert pairs["refined", "uniform_plan"]["verdict"] == "indistinguishable"
    assert pairs["targeted_base", "uniform"]["verdict"] == "indistinguishable"
    assert pairs["refined", "targeted_base"]["verdict"] == "better"
    assert pairs["uniform_plan", "uniform"]["verdict"] == "better"
    interaction = rows[-1]
    assert interaction["effect"] == "interaction" and interaction["difference"] == 0.0
    for row in rows:
        assert {"a", "b", "difference", "ci95", "verdict", "covers"} <= set(row)
        assert row["covers"] == ["classifier seeds", "test images"]
        assert row["ci95"][0] <= row["difference"] <= row["ci95"][1]
    assert targeting_credit(rows).startswith("Targeting is not credited: indistinguishable")


def test_targeting_and_its_interaction_with_the_recipe() -> None:
    """Targeting worth 4 points with the plan's recipe and none with the base: credited at the
    plan's recipe only, and the interaction is +4 points."""
    predictions, labels = _predictions({"refined": 0.97, "targeted_base": 0.90,
                                        "uniform_plan": 0.93, "uniform": 0.90})
    rows = loop_comparisons(loop_correctness(predictions, labels), draws=500)
    pairs = _by_pair(rows)
    assert pairs["refined", "uniform_plan"]["verdict"] == "better"
    assert pairs["targeted_base", "uniform"]["verdict"] == "indistinguishable"
    interaction = rows[-1]
    expected = (pairs["refined", "uniform_plan"]["difference"]
                - pairs["targeted_base", "uniform"]["difference"])
    assert interaction["difference"] == pytest.approx(expected, abs=1e-6)
    assert interaction["verdict"] == "better"
    assert targeting_credit(rows).startswith("Targeting is credited at the plan's recipe only")
    assert rows == loop_comparisons(loop_correctness(predictions, labels), draws=500)


def test_every_arm_is_needed() -> None:
    predictions, labels = _predictions({"refined": 0.9, "uniform": 0.9})
    with pytest.raises(ValueError, match="targeted_base"):
        loop_correctness(predictions, labels)
