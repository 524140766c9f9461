"""The embedded DDPM's training length: a ceiling that follows the data, a held-out criterion that
stops it, and a resume that gives the uninterrupted result (held-out curve included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.evaluation.soundness import generator_outcome, generator_warnings
from synthfactory.ops.generation.ddpm import train_ddpm
from synthfactory.ops.generation.ddpm_stopping import (MAX_CEILING, MIN_CEILING, should_stop,
                                                       training_budget)
from synthfactory.ops.generation.generator_build import resolved_ddpm_settings, training_record

SETTINGS = {"widths": [16, 32], "batch_size": 16, "learning_rate": 3e-3, "cfg_dropout": 0.1,
            "ema_decay": 0.9, "num_train_timesteps": 100}


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_digits(8, 1)
    return data.images[:64], data.labels[:64], data.images[64:96], data.labels[64:96]


def _train(**overrides: Any) -> tuple[torch.nn.Module, Any]:
    images, labels, val_images, val_labels = _digits()
    unet, _, log = train_ddpm(images, labels, 10, **{**SETTINGS, **overrides}, seed=3,
                              device=torch.device("cpu"), val_images=val_images,
                              val_labels=val_labels)
    return unet, log


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                 strict=True))


def test_the_ceiling_and_cadence_follow_the_data() -> None:
    # The embedded digits: 1,132 train images of 8x8x1.
    assert training_budget(1132, 8, 8, 1) == (1600, 80)
    # More images, more pixels, more channels: a longer ceiling, checked as often (1/20).
    sixteen = training_budget(4500, 16, 16, 1)
    colour = training_budget(4500, 16, 16, 3)
    assert 1600 < sixteen[0] < colour[0] and colour[1] == colour[0] // 20
    assert training_budget(10, 8, 8, 1) == (MIN_CEILING, 30)
    assert training_budget(1_000_000, 64, 64, 3)[0] == MAX_CEILING
    settings = resolved_ddpm_settings({"train_steps": None, "eval_every": None}, (1132, 8, 8, 1))
    assert (settings["train_steps"], settings["eval_every"]) == (1600, 80)
    given = resolved_ddpm_settings({"train_steps": 500, "eval_every": None}, (1132, 8, 8, 1))
    assert (given["train_steps"], given["eval_every"]) == (500, 25)


def test_the_criterion_stops_when_the_loss_stops_improving() -> None:
    curve = [(10, 1.0), (20, 0.8), (30, 0.795), (40, 0.799)]
    assert not should_stop(curve[:3], patience=2, min_delta=0.01)
    assert should_stop(curve, patience=2, min_delta=0.01)  # 0.795 and 0.799: < 1% better
    assert not should_stop(curve, patience=2, min_delta=0.0)  # 0.795 beat 0.8
    assert not should_stop(curve, patience=0, min_delta=0.5)  # patience 0: to the ceiling


def test_training_stops_on_the_held_out_criterion_before_its_ceiling() -> None:
    # A relative min_delta of 90% cannot be met twice in a row: it stops at the third check.
    _, log = _train(train_steps=40, eval_every=4, patience=2, min_delta=0.9)
    assert log.stopped_by == "criterion" and log.steps == 12
    assert [step for step, _ in log.validation] == [4, 8, 12]
    record = training_record(log, {"train_steps": 40, "eval_every": 4, "patience": 2,
                                   "min_delta": 0.9})
    assert record["converged"] and record["steps"] == 12 and record["ceiling"] == 40
    assert generator_warnings(record) == []
    assert generator_outcome({"training": record}).passed
    again = _train(train_steps=40, eval_every=4, patience=2, min_delta=0.9)[1]
    assert again.validation == log.validation  # fixed images, timesteps and noise


def test_a_generator_stopped_after_10_steps_is_flagged_as_unconverged() -> None:
    _, log = _train(train_steps=10, eval_every=2, patience=3, min_delta=0.01)
    assert log.stopped_by == "ceiling" and log.steps == 10
    record = training_record(log, {"train_steps": 10, "eval_every": 2, "patience": 3,
                                   "min_delta": 0.01})
    assert not record["converged"]
    [found] = generator_warnings(record)
    assert found["kind"] == "generator_unconverged" and found["bound"] == 0.01
    assert found["value"] > 0.01  # still improving: the number that tripped it
    assert "ceiling of 10 steps" in found["message"]
    outcome = generator_outcome({"training": record})
    assert not outcome.passed and outcome.details["warning"] == found


@pytest.mark.parametrize("early", [False, True])
def test_resuming_gives_the_uninterrupted_weights_and_curve(tmp_path: Path, early: bool) -> None:
    # early: the criterion stops at step 16 after a resume from the checkpoint of step 8.
    settings = ({"train_steps": 40, "eval_every": 4, "patience": 3, "min_delta": 0.9} if early
                else {"train_steps": 24, "eval_every": 4, "patience": 0})
    uninterrupted, expected = _train(**settings)
    checkpoints = tmp_path / "checkpoints"
    first, _ = _train(**settings, checkpoint_every=8, checkpoint_dir=checkpoints)
    assert _same(first, uninterrupted)
    messages: list[str] = []
    images, labels, val_images, val_labels = _digits()
    resumed, _, log = train_ddpm(images, labels, 10, **{**SETTINGS, **settings}, seed=3,
                                 device=torch.device("cpu"), val_images=val_images,
                                 val_labels=val_labels, checkpoint_every=8,
                                 checkpoint_dir=checkpoints, log=messages.append)
    assert any("resuming from the checkpoint at step" in m for m in messages)
    assert _same(resumed, uninterrupted)
    assert log.validation == expected.validation and log.steps == expected.steps
    assert log.stopped_by == ("criterion" if early else "ceiling")
