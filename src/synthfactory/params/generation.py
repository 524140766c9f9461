"""The sections of the generative half: `generator` (with its embedded DDPM) and `synthetic_shards`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from synthfactory.params.base import Section


class DdpmParams(Section):
    """Training settings of the embedded class-conditional DDPM.

    How long it trains follows the data (ops/generation/ddpm_stopping.py): `train_steps` is a
    ceiling (null: 6·sqrt(train images × height × width × channels), rounded to 100, between
    600 and 50,000), and every `eval_every` steps (null: a twentieth of the ceiling, at least
    25) the EMA model's denoising loss on at most `eval_images` real validation images, at fixed
    timesteps and noise, is measured; training stops when the last `patience` evaluations
    lowered the best loss by less than a relative `min_delta` (`patience` 0: to the ceiling).
    """

    widths: list[int] = [32, 64]
    train_steps: int | None = Field(default=None, ge=20)
    eval_every: int | None = Field(default=None, gt=0)
    patience: int = Field(default=3, ge=0)
    min_delta: float = Field(default=0.05, ge=0.0, lt=1.0)
    eval_images: int = Field(default=256, gt=0)
    batch_size: int = Field(default=128, gt=0)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    cfg_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    ema_decay: float = Field(default=0.995, ge=0.0, lt=1.0)
    num_train_timesteps: int = Field(default=1000, gt=1)
    checkpoint_every: int = Field(default=200, ge=0)  # steps between checkpoints; 0: none

    @field_validator("widths")
    @classmethod
    def _widths_fit_groupnorm(cls, widths: list[int]) -> list[int]:
        if not widths or any(w <= 0 or w % 8 for w in widths):
            raise ValueError(f"generator.ddpm.widths {widths} must be positive multiples of 8 "
                             "(the UNet normalises in groups of 8)")
        return widths


class AdapterParams(Section):
    """LoRA fine-tuning of a pretrained pipeline on the real train images (`generator.adapt: lora`).

    `rank` of the LoRA matrices (alpha = rank), `steps` of AdamW at `learning_rate` on
    `batch_size` images, the text encoder adapted too when `text_encoder`. `resolution`: the
    size images are upscaled to for training (null: the size `synthetic_shards` renders at).
    """

    rank: int = Field(default=4, gt=0)
    steps: int = Field(default=500, gt=0)
    learning_rate: float = Field(default=1e-4, gt=0.0)
    batch_size: int = Field(default=4, gt=0)
    text_encoder: bool = False
    resolution: int | None = Field(default=None, ge=8)
    checkpoint_every: int = Field(default=100, ge=0)  # steps between checkpoints; 0: none


class GeneratorParams(Section):
    """Which diffusion model generates the images.

    `ddpm` trains the embedded class-conditional model; `diffusers` loads a pretrained
    text-to-image pipeline from `model` (a local directory or a hub id), safetensors only.
    `adapt: lora` fine-tunes LoRA weights of that pipeline on the real train images first
    (the `generator_adapter` asset, settings under `adapter`); the shards are generated with it.
    """

    backend: Literal["ddpm", "diffusers"] = "ddpm"
    model: str | None = None
    revision: str | None = None
    variant: str | None = None
    local_files_only: bool = False
    lora: str | None = None
    lora_scale: float = Field(default=1.0, ge=0.0)
    compile: bool = False
    adapt: Literal["none", "lora"] = "none"
    adapter: AdapterParams = AdapterParams()
    ddpm: DdpmParams = DdpmParams()

    @model_validator(mode="after")
    def _model_matches_backend(self) -> GeneratorParams:
        if self.backend == "diffusers" and not self.model:
            raise ValueError("generator.backend 'diffusers' needs generator.model: a local "
                             "pipeline directory or a hub id such as stabilityai/sd-turbo")
        if self.backend == "ddpm" and (self.model or self.lora):
            raise ValueError(f"generator.model {self.model!r} / lora {self.lora!r} need "
                             "generator.backend: diffusers (the ddpm backend trains its own model)")
        if self.adapt == "lora" and self.backend != "diffusers":
            raise ValueError("generator.adapt 'lora' needs generator.backend: diffusers (the ddpm "
                             "backend is trained on your images already); set adapt: none")
        if self.adapt == "lora" and self.lora:
            raise ValueError(f"generator.adapt 'lora' trains its own LoRA and generator.lora "
                             f"{self.lora!r} names another: keep one of them")
        return self


class SyntheticShardsParams(Section):
    """How the prompts are sampled and cut into shards."""

    shard_size: int = Field(default=250, gt=0)
    steps: int = Field(default=25, gt=0)
    scheduler: Literal["default", "ddim", "dpm", "euler", "euler_a", "unipc"] = "ddim"
    batch_size: int = Field(default=250, gt=0)
    height: int | None = Field(default=None, ge=8)
    width: int | None = Field(default=None, ge=8)
    bad_images: Literal["regenerate", "drop"] = "regenerate"
    max_attempts: int = Field(default=3, gt=0)

