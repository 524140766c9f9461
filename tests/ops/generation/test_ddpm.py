"""The embedded DDPM: training, safetensors round trip through from_pretrained, seeded sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.generation.ddpm import DdpmGenerator, build_unet, save_generator, train_ddpm

SETTINGS = {"widths": [16, 32], "train_steps": 40, "batch_size": 32, "learning_rate": 3e-3,
            "cfg_dropout": 0.1, "ema_decay": 0.9, "num_train_timesteps": 100}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_digits(8, 1)
    unet, scheduler, log = train_ddpm(data.images[:200], data.labels[:200], 10, **SETTINGS, seed=0,
                                      device=torch.device("cpu"))
    assert log.losses[-1][1] < log.losses[0][1]
    directory = tmp_path_factory.mktemp("generator")
    save_generator(directory, unet, scheduler, {"backend": "ddpm", "n_classes": 10})
    return directory


def test_saved_as_safetensors_with_a_digest(trained: Path) -> None:
    info = json.loads((trained / "generator.json").read_text())
    assert len(info["digest"]) == 64
    assert (trained / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(trained.rglob("*.bin")) and not list(trained.rglob("*.pt"))


def test_training_is_deterministic() -> None:
    data = load_digits(8, 1)
    runs = [train_ddpm(data.images[:64], data.labels[:64], 10, **{**SETTINGS, "train_steps": 3},
                       seed=5, device=torch.device("cpu"))[0] for _ in range(2)]
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_sampling_depends_only_on_seed_class_and_guidance(trained: Path) -> None:
    model = DdpmGenerator(trained, torch.device("cpu"), torch.float32)
    batch = model.sample([3, 4, 5], [11, 12, 13], [2.0, 2.0, 1.0], steps=5)
    assert batch.shape == (3, 8, 8, 1) and batch.dtype == np.uint8
    again = model.sample([3, 4, 5], [11, 12, 13], [2.0, 2.0, 1.0], steps=5)
    np.testing.assert_array_equal(batch, again)
    other_seed = model.sample([3], [99], [2.0], steps=5)
    assert not np.array_equal(other_seed[0], batch[0])
    dpm = model.sample([3], [11], [2.0], steps=5, scheduler_name="dpm")
    assert dpm.shape == (1, 8, 8, 1)
    euler = model.sample([3], [11], [2.0], steps=5, scheduler_name="euler")
    assert euler.shape == (1, 8, 8, 1)
    with pytest.raises(ValueError, match="'heun' is not one of"):
        model.sample([3], [11], [2.0], steps=5, scheduler_name="heun")


def test_missing_generator_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="materialize the 'generator' asset"):
        DdpmGenerator(tmp_path, torch.device("cpu"), torch.float32)


def test_unet_depth_must_fit_the_resolution() -> None:
    with pytest.raises(ValueError, match="resolution 6 is not divisible"):
        build_unet(6, 1, 10, [16, 32, 64])
