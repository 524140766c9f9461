"""LoRA fine-tuning of a tiny Stable Diffusion built from config (ops level)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.data.prompts import PromptRecord
from synthfactory.ops.generation.adapter import (ADAPTER_JSON, LORA_WEIGHTS, LoraSettings,
                                                 StableDiffusionParts, save_adapter, train_lora)
from synthfactory.ops.generation.samplers import SamplerSettings
from synthfactory.ops.generation.text2image import Text2ImageGenerator, describe_pipeline
from synthfactory.ops.storage.atomic import sha256_file
from tests.support import class_images

CPU = torch.device("cpu")
TEXTS = [["a red square"], ["a green square"]]


def _data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images = class_images(0, count, 16, seed) + class_images(1, count, 16, seed)
    return np.stack(images), np.asarray([0] * count + [1] * count)


def _train(sd: Path, settings: LoraSettings, **kwargs: object):
    parts = StableDiffusionParts(sd, CPU, torch.float32)
    images, labels = _data(6, seed=0)
    return train_lora(parts, images, labels, TEXTS, settings, seed=0, base_digest="tiny",
                      **kwargs)


def test_finetune_lowers_heldout_loss_and_changes_what_is_generated(
        tiny_sd_dir: Path, tmp_path: Path) -> None:
    """Guards the point of adaptation: on held-out images of the same classes (fixed latent
    draws, noises and timesteps) the adapted model denoises better, and its images differ.
    A no-op adapter (B stays 0) fails both assertions."""
    torch.set_num_threads(1)
    settings = LoraSettings(rank=4, steps=40, learning_rate=3e-3, batch_size=4, text_encoder=True,
                            checkpoint_every=0)
    result = _train(tiny_sd_dir, settings, heldout=_data(3, seed=1))
    before, after = result.heldout_loss["before"], result.heldout_loss["after"]
    assert after < before * 0.9, (before, after)
    assert result.text_layers and any(k.startswith("unet") or "attn" in k
                                      for k in result.unet_layers)
    record = save_adapter(tmp_path, result, {"base_digest": "tiny"})
    assert (tmp_path / LORA_WEIGHTS).is_file()
    assert json.loads((tmp_path / ADAPTER_JSON).read_text())["digest"] == \
        sha256_file(tmp_path / LORA_WEIGHTS) == record["digest"]

    base_record = describe_pipeline(str(tiny_sd_dir))
    lora = {"path": str(tmp_path / LORA_WEIGHTS), "scale": 1.0, "digest": record["digest"]}
    prompts = [PromptRecord(index=i, key=f"s{i}", class_id=i, class_name=str(i), template="",
                            text=TEXTS[i][0], negative_text="", seed=i, guidance=2.0)
               for i in range(2)]
    sampler = SamplerSettings(steps=3, scheduler="default", height=16, width=16)
    plain, _ = Text2ImageGenerator(base_record, CPU, torch.float32).render(prompts, [1, 2],
                                                                             sampler)
    adapted_model = Text2ImageGenerator({**base_record, "lora": lora}, CPU, torch.float32)
    adapted, _ = adapted_model.render(prompts, [1, 2], sampler)
    assert adapted_model.digest.endswith(record["digest"])
    assert np.abs(plain.astype(int) - adapted.astype(int)).max() > 0


def test_a_killed_finetune_resumes_bit_identically(tiny_sd_dir: Path, tmp_path: Path) -> None:
    """Guards resume: weights after a kill at step 8 and a rerun (from the step-5 checkpoint)
    equal an uninterrupted run's bit for bit; restoring without the generator's state or the
    AdamW moments would not."""
    torch.set_num_threads(1)
    settings = LoraSettings(rank=2, steps=12, learning_rate=1e-3, batch_size=2,
                            checkpoint_every=5)
    whole = _train(tiny_sd_dir, settings)

    class Killed(RuntimeError):
        pass

    def kill_at_8(message: str) -> None:
        if "step 8/" in message:
            raise Killed(message)

    checkpoints = tmp_path / "ckpt"
    with pytest.raises(Killed):
        _train(tiny_sd_dir, settings, checkpoint_dir=checkpoints, log=kill_at_8, log_every=1)
    assert json.loads((checkpoints / "step.json").read_text())["step"] == 5
    messages: list[str] = []
    resumed = _train(tiny_sd_dir, settings, checkpoint_dir=checkpoints, log=messages.append)
    assert any("resuming from step 5" in m for m in messages)
    assert resumed.steps_run == 7
    assert whole.unet_layers.keys() == resumed.unet_layers.keys()
    for key, value in whole.unet_layers.items():
        assert torch.equal(value, resumed.unet_layers[key]), key


def test_only_stable_diffusion_pipelines_are_adapted(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="FluxPipeline"):
        StableDiffusionParts(tmp_path, CPU, torch.float32)
