"""Generator training checkpoints: a resumed training equals an uninterrupted one, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.generation.ddpm import train_ddpm
from synthfactory.ops.storage.checkpoint import STATE_FILE, STEP_FILE, load_checkpoint

SETTINGS = {"widths": [16, 32], "train_steps": 24, "batch_size": 16, "learning_rate": 3e-3,
            "cfg_dropout": 0.1, "ema_decay": 0.9, "num_train_timesteps": 100}


def _train(checkpoints: Path | None, messages: list[str] | None = None,
           **overrides: object) -> torch.nn.Module:
    data = load_digits(8, 1)
    unet, _, _ = train_ddpm(data.images[:64], data.labels[:64], 10, **{**SETTINGS, **overrides},
                            seed=3, device=torch.device("cpu"), checkpoint_every=8,
                            checkpoint_dir=checkpoints, log=None if messages is None
                            else messages.append)
    return unet


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                 strict=True))


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    uninterrupted = _train(None)
    checkpoints = tmp_path / "checkpoints"
    first = _train(checkpoints)  # leaves its last checkpoint (step 16 of 24) behind
    assert _same(first, uninterrupted)
    assert json.loads((checkpoints / STEP_FILE).read_text())["step"] == 16
    assert (checkpoints / STATE_FILE).is_file() and not list(checkpoints.glob("*.pt"))
    messages: list[str] = []
    resumed = _train(checkpoints, messages)  # starts at step 16: only 8 steps are trained
    assert any("resuming from the checkpoint at step 16/24" in m for m in messages)
    assert _same(resumed, uninterrupted)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    _train(checkpoints)
    fingerprint = json.loads((checkpoints / STEP_FILE).read_text())["fingerprint"]
    assert load_checkpoint(checkpoints, fingerprint) is not None
    assert load_checkpoint(checkpoints, "another") is None
    messages: list[str] = []
    other = _train(checkpoints, messages, learning_rate=1e-3)
    assert not any("resuming" in m for m in messages)
    assert _same(other, _train(None, learning_rate=1e-3))
