"""Equal compute: every compared arm trains the same steps (the largest arm's epoch schedule),
arms whose protocol fixes epochs keep their own schedule, and the old policy is still there."""

from __future__ import annotations

import pytest

from synthfactory.ops.training.budget import Budget, steps_per_pass, training_budgets

ARMS = {"real": 1132, "synthetic": 1000, "filtered": 950, "mixed": 2086, "distilled": 100}
RECIPE = {"epochs": 15, "min_steps": 150, "batch_size": 128}


def test_equal_steps_gives_every_arm_the_largest_arms_schedule() -> None:
    budgets = training_budgets(ARMS, **RECIPE)
    # mixed, the largest: 15 × (2086 // 128 = 16) = 240 steps, as it trained under epochs.
    assert {b.steps for b in budgets.values()} == {240}
    assert all(b.policy == "equal_steps" for b in budgets.values())
    assert budgets["real"].images_seen == 240 * 128
    assert budgets["distilled"].batch_size == 100 and budgets["distilled"].images_seen == 24000
    assert "fewer than one batch" in budgets["distilled"].reason
    assert "240 steps, the same for every compared arm" in budgets["real"].reason
    assert "largest, mixed, 2086 images" in budgets["real"].reason
    assert list(budgets) == list(ARMS)
    # Small arms only: min_steps decides.
    small = training_budgets({"a": 300, "b": 500}, **RECIPE)
    assert {b.steps for b in small.values()} == {150} and "min_steps 150" in small["a"].reason


def test_an_epoch_protocol_keeps_its_own_schedule_and_leaves_the_reference() -> None:
    budgets = training_budgets(ARMS, **RECIPE,
                               epoch_protocol={"distilled": "the dataset-distillation evaluation"})
    assert budgets["distilled"] == Budget(
        "epochs", 150, 15000, 100, budgets["distilled"].reason)
    assert "the dataset-distillation evaluation fixes epochs" in budgets["distilled"].reason
    assert budgets["real"].steps == 240
    only_mixed = training_budgets({"mixed": 2086, "real": 1132}, **RECIPE,
                                  epoch_protocol={"mixed": "a protocol"})
    assert only_mixed["real"].steps == 150 and only_mixed["mixed"].steps == 240


def test_the_epochs_policy_reproduces_train_pys_steps() -> None:
    budgets = training_budgets(ARMS, policy="epochs", **RECIPE)
    for arm, n in ARMS.items():
        per_pass = n // min(128, n)  # train.py: in memory, the partial batch is dropped
        assert budgets[arm].steps == max(150, 15 * per_pass)
    assert budgets["mixed"].steps == 240 and budgets["real"].steps == 150
    assert steps_per_pass(2086, 128) == 16 and steps_per_pass(2086, 128, streamed=True) == 17


def test_bad_budgets_fail_loudly() -> None:
    with pytest.raises(ValueError, match=r"'equal' must be one of \['equal_steps', 'epochs'\]"):
        training_budgets(ARMS, policy="equal", **RECIPE)
    with pytest.raises(ValueError, match="no training images {'real': 0}"):
        training_budgets({"real": 0}, **RECIPE)
    with pytest.raises(ValueError, match=r"names arms \['dm'\] that are not compared"):
        training_budgets(ARMS, **RECIPE, epoch_protocol={"dm": "x"})
    with pytest.raises(ValueError, match="min_steps 0 must be a positive integer"):
        training_budgets(ARMS, epochs=15, min_steps=0, batch_size=128)
    with pytest.raises(ValueError, match="no arms"):
        training_budgets({}, **RECIPE)
