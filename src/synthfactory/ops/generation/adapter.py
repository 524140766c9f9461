"""Adapting a pretrained text-to-image pipeline to the user's images: LoRA fine-tuning (peft).

DataDream (Kim et al., 2024) fine-tunes LoRA weights of Stable Diffusion's UNet and text
encoder on the few-shot real images of each class, captioned with the class prompt, before
generating; Real-Fake (Yuan et al., 2024) argues that matching the training distribution is
what makes synthetic images train well. This module does that for pipelines of the Stable
Diffusion family (`StableDiffusionPipeline`: SD 1.x/2.x, SD-Turbo).

The training step follows diffusers' `examples/text_to_image/train_text_to_image_lora.py`:
LoRA on the UNet's attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`; with the text
encoder also its `q_proj`, `k_proj`, `v_proj`, `out_proj`), alpha = rank, Gaussian init (B = 0,
so the untrained adapter changes nothing), AdamW at a constant learning rate, the epsilon (or
v) MSE at uniformly drawn timesteps of the pipeline's DDPM training schedule, frozen VAE, base
weights in the runtime dtype and LoRA weights in float32. Deviations: the VAE encodes each real
image once (mean and std of its latent distribution; every step draws a fresh latent from
them, as the script's per-step encode does); images are upscaled to the rendering size
(`resolution`) and not randomly cropped or flipped (they are already the classes' own images
at their own framing); the caption of an image is one of its class's prompt texts, drawn per
step; the transformers-side `add_adapter` of the text encoder needs peft ≥ 0.22, so the text
encoder gets its LoRA through peft's `inject_adapter_in_model` (the same layers).

Everything random comes from one seeded generator whose state is checkpointed with the LoRA
weights and AdamW's moments: a killed fine-tune resumes bit-identically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from synthfactory.ops.generation import ADAPTER_JSON
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.atomic import dumps_json, sha256_file
from synthfactory.ops.storage.checkpoint import (Checkpoint, load_checkpoint, optimizer_tensors,
                                                  restore_optimizer, save_checkpoint)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the name diffusers' loaders look for
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)
# Held-out loss: this many (timestep, noise) draws per image, fixed by the seed.
HELDOUT_DRAWS = 4


@dataclass(frozen=True)
class LoraSettings:
    """What is fine-tuned and how (mirrors `params.yaml: generator.adapter`)."""

    rank: int = 4
    steps: int = 500
    learning_rate: float = 1e-4
    batch_size: int = 4
    text_encoder: bool = False
    resolution: int | None = None
    checkpoint_every: int = 100


@dataclass
class AdapterResult:
    """The trained LoRA layers (diffusers naming) and what the training did."""

    unet_layers: dict[str, torch.Tensor]
    text_layers: dict[str, torch.Tensor] | None
    losses: list[tuple[int, float]]
    seconds: float
    steps_run: int
    resolution: int
    trainable_parameters: int
    heldout_loss: dict[str, float] = field(default_factory=dict)


class StableDiffusionParts:
    """The components of a Stable Diffusion pipeline directory that training needs."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        index = json.loads((path / "model_index.json").read_text())
        if index.get("_class_name") not in SUPPORTED_PIPELINES:
            raise ValueError(f"generator.adapt: lora supports {', '.join(SUPPORTED_PIPELINES)} "
                             f"(SD 1.x/2.x, SD-Turbo); {path} is a {index.get('_class_name')}: "
                             "set generator.adapt: none")
        # use_safetensors spelled out at every call: tests/reliability/test_untrusted.py scans for
        # it, and a tokenizer or scheduler has no weights to unpickle anyway.
        self.device, self.dtype = device, dtype
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer",
                                                       local_files_only=True, use_safetensors=True)
        self.text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", dtype=dtype, local_files_only=True,
            use_safetensors=True).to(device)
        self.vae = AutoencoderKL.from_pretrained(
            path, subfolder="vae", torch_dtype=dtype, local_files_only=True,
            use_safetensors=True).to(device)
        self.unet = UNet2DConditionModel.from_pretrained(
            path, subfolder="unet", torch_dtype=dtype, local_files_only=True,
            use_safetensors=True).to(device)
        self.scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler",
                                                       local_files_only=True, use_safetensors=True)
        for model in (self.text_encoder, self.vae, self.unet):
            model.requires_grad_(False).eval()
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_resolution(self) -> int:
        """The size the pipeline renders at by default (UNet sample size × VAE factor)."""
        return int(self.unet.config.sample_size) * self.vae_scale

    def add_lora(self, rank: int, text_encoder: bool) -> list[torch.nn.Parameter]:
        """Inject LoRA layers (B = 0: no change yet); return the trainable parameters (fp32)."""
        from peft import LoraConfig, inject_adapter_in_model

        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=UNET_TARGETS))
        if text_encoder:
            inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank,
                                               init_lora_weights="gaussian",
                                               target_modules=TEXT_TARGETS), self.text_encoder)
        trainable = [p for _, p in self.trainable()]
        for parameter in trainable:  # LoRA weights train in float32 whatever the base dtype
            parameter.data = parameter.data.float()
        return trainable

    def trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        """(name, parameter) of every LoRA weight, UNet first, in a fixed order."""
        return ([(f"unet/{n}", p) for n, p in self.unet.named_parameters() if p.requires_grad]
                + [(f"text/{n}", p) for n, p in self.text_encoder.named_parameters()
                   if p.requires_grad])

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, resolution: int,
                      batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of each image's VAE latent distribution (float32, on the device)."""
        means, stds = [], []
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([_to_pixels(image, resolution)
                                  for image in images[start:start + batch_size]])
            dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        return torch.cat(means), torch.cat(stds)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """The text encoder's hidden states of each text (padded to the tokenizer's length)."""
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device))[0]

    def loss(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
             hidden: torch.Tensor) -> torch.Tensor:
        """The denoising MSE (epsilon or v target, as the scheduler predicts) of a batch."""
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with torch.autocast(self.device.type, dtype=self.dtype,
                            enabled=self.device.type == "cuda" and self.dtype != torch.float32):
            prediction = self.unet(noisy.to(self.dtype), timesteps.to(self.device),
                                   encoder_hidden_states=hidden.to(self.dtype)).sample
        return torch.nn.functional.mse_loss(prediction.float(), target.float())


def _to_pixels(image: np.ndarray, resolution: int) -> torch.Tensor:
    """A uint8 H×W×C image as a 3×R×R tensor in [-1, 1] (grey repeated, bicubic resize)."""
    pixels = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    picture = Image.fromarray(pixels).convert("RGB")
    if picture.size != (resolution, resolution):
        picture = picture.resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def heldout_loss(parts: StableDiffusionParts, means: torch.Tensor, stds: torch.Tensor,
                 texts: Sequence[str], seed: int) -> float:
    """Mean denoising loss of held-out images at fixed latent draws, noises and timesteps.

    The draws depend only on `seed` and the image's position, so the same images give the same
    number before and after fine-tuning: a lower one means the adapter models them better.
    """
    total, count = 0.0, 0
    with torch.no_grad():
        hidden = parts.embed_texts(texts)
        for index in range(len(means)):
            rng = torch.Generator().manual_seed(derive_seed(seed, "adapter", "heldout", index))
            shape = (HELDOUT_DRAWS, *means.shape[1:])
            latent = (means[index].cpu() + stds[index].cpu() * torch.randn(shape, generator=rng))
            latent = latent * parts.vae.config.scaling_factor
            noise = torch.randn(shape, generator=rng)
            steps = torch.randint(0, parts.scheduler.config.num_train_timesteps,
                                  (HELDOUT_DRAWS,), generator=rng)
            loss = parts.loss(latent.to(parts.device), noise.to(parts.device), steps,
                              hidden[index:index + 1].expand(HELDOUT_DRAWS, -1, -1))
            total += float(loss) * HELDOUT_DRAWS
            count += HELDOUT_DRAWS
    return total / count


def train_lora(parts: StableDiffusionParts, images: np.ndarray, labels: np.ndarray,
               class_texts: Sequence[Sequence[str]], settings: LoraSettings, *, seed: int,
               base_digest: str, heldout: tuple[np.ndarray, np.ndarray] | None = None,
               checkpoint_dir: Path | None = None,
               log: Callable[[str], None] | None = None, log_every: int = 50) -> AdapterResult:
    """Fine-tune LoRA weights on uint8 images of classes captioned with `class_texts[label]`.

    With `heldout` (images, labels) the denoising loss on them at fixed draws is measured
    before and after (`heldout_loss`: `before`, `after`). With `checkpoint_dir` and
    `settings.checkpoint_every`, the whole state (LoRA weights, AdamW moments, the generator,
    the loss log) is saved every so many steps, and a later call with the same inputs resumes
    from it, giving the same weights bit for bit.
    """
    if len(images) == 0:
        raise ValueError("cannot fine-tune the generator on no real images")
    missing = [c for c in np.unique(labels) if not class_texts[int(c)]]
    if missing:
        raise ValueError(f"classes {missing} have no prompt text to caption their images")
    resolution = settings.resolution or parts.default_resolution
    if resolution % parts.vae_scale:
        raise ValueError(f"generator.adapter.resolution {resolution} is not a multiple of the "
                         f"VAE's factor {parts.vae_scale}")
    torch.manual_seed(derive_seed(seed, "adapter", "init"))
    trainable = parts.add_lora(settings.rank, settings.text_encoder)
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    means, stds = parts.encode_images(images, resolution)
    texts = [str(t) for texts in class_texts for t in texts]
    offsets = np.cumsum([0] + [len(t) for t in class_texts])
    frozen_hidden = None if settings.text_encoder else parts.embed_texts(texts).detach()
    held = None
    result_heldout: dict[str, float] = {}
    if heldout is not None and len(heldout[0]):
        held_means, held_stds = parts.encode_images(heldout[0], resolution)
        held_texts = [class_texts[int(c)][0] for c in heldout[1]]
        held = (held_means, held_stds, held_texts)
        result_heldout["before"] = heldout_loss(parts, *held, seed=seed)
    fingerprint = _fingerprint(images, labels, class_texts, settings, seed, base_digest,
                               resolution)
    rng = torch.Generator().manual_seed(derive_seed(seed, "adapter", "train"))
    losses: list[tuple[int, float]] = []
    first = 0
    resumed = None if checkpoint_dir is None else load_checkpoint(checkpoint_dir, fingerprint)
    if resumed is not None:
        first = _restore(resumed, parts, optimizer, rng)
        losses = [(int(s), float(v)) for s, v in resumed.state["losses"]]
        if log is not None:
            log(f"generator_adapter: resuming from step {first}/{settings.steps}")
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    scaling = parts.vae.config.scaling_factor
    started = time.perf_counter()
    parts.unet.train()
    for step in range(first, settings.steps):
        batch = torch.randint(0, len(images), (settings.batch_size,), generator=rng)
        draw = torch.randn((settings.batch_size, *means.shape[1:]), generator=rng)
        noise = torch.randn(draw.shape, generator=rng)
        timesteps = torch.randint(0, parts.scheduler.config.num_train_timesteps,
                                  (settings.batch_size,), generator=rng)
        picks = torch.randint(0, 2**31 - 1, (settings.batch_size,), generator=rng)
        classes = labels_t[batch]
        text_index = [int(offsets[c] + p % len(class_texts[c])) for c, p in zip(
            classes.tolist(), picks.tolist(), strict=True)]
        latents = (means[batch] + stds[batch] * draw.to(parts.device)) * scaling
        hidden = (frozen_hidden[text_index] if frozen_hidden is not None
                  else parts.embed_texts([texts[i] for i in text_index]))
        loss = parts.loss(latents, noise.to(parts.device), timesteps, hidden)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = step + 1
        if step % log_every == 0 or done == settings.steps:
            losses.append((done, loss.item()))
            if log is not None:
                log(f"generator_adapter step {done}/{settings.steps}: loss {loss.item():.4f}")
        if checkpoint_dir is not None and settings.checkpoint_every \
                and done % settings.checkpoint_every == 0 and done < settings.steps:
            save_checkpoint(checkpoint_dir, fingerprint, _snapshot(done, parts, optimizer, rng,
                                                                   losses))
    seconds = time.perf_counter() - started
    parts.unet.eval()
    if held is not None:
        result_heldout["after"] = heldout_loss(parts, *held, seed=seed)
    unet_layers, text_layers = lora_layers(parts, settings.text_encoder)
    return AdapterResult(unet_layers=unet_layers, text_layers=text_layers, losses=losses,
                         seconds=seconds, steps_run=settings.steps - first,
                         resolution=resolution,
                         trainable_parameters=sum(p.numel() for p in trainable),
                         heldout_loss=result_heldout)


def lora_layers(parts: StableDiffusionParts, text_encoder: bool
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The LoRA weights in diffusers' naming (what `load_lora_weights` reads)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    unet = convert_state_dict_to_diffusers(get_peft_model_state_dict(parts.unet))
    text = (convert_state_dict_to_diffusers(get_peft_model_state_dict(parts.text_encoder))
            if text_encoder else None)
    return unet, text


def save_adapter(directory: Path, result: AdapterResult, info: dict[str, Any]) -> dict[str, Any]:
    """Write the LoRA as safetensors (`pytorch_lora_weights.safetensors`), then `adapter.json`
    with its sha256 (last: a directory without it is not a finished adapter)."""
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers={k: v.detach().cpu().contiguous()
                                     for k, v in result.unet_layers.items()},
        text_encoder_lora_layers=None if result.text_layers is None else {
            k: v.detach().cpu().contiguous() for k, v in result.text_layers.items()},
        weight_name=LORA_WEIGHTS, safe_serialization=True)
    record = {**info, "weights": LORA_WEIGHTS, "digest": sha256_file(directory / LORA_WEIGHTS),
              "losses": [list(pair) for pair in result.losses],
              "heldout_loss": result.heldout_loss, "resolution": result.resolution,
              "trainable_parameters": result.trainable_parameters}
    (directory / ADAPTER_JSON).write_text(dumps_json(record))
    return record


def _fingerprint(images: np.ndarray, labels: np.ndarray, class_texts: Sequence[Sequence[str]],
                 settings: LoraSettings, seed: int, base_digest: str, resolution: int) -> str:
    """What a checkpoint was trained from: image bytes, labels, captions, settings, base model."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
    digest.update(json.dumps({"texts": [list(t) for t in class_texts], "seed": seed,
                              "base": base_digest, "resolution": resolution,
                              "settings": settings.__dict__}, sort_keys=True).encode())
    return digest.hexdigest()


def _snapshot(step: int, parts: StableDiffusionParts, optimizer: torch.optim.Optimizer,
              rng: torch.Generator, losses: list[tuple[int, float]]) -> Checkpoint:
    tensors = {name: p.detach() for name, p in parts.trainable()}
    tensors["rng"] = rng.get_state()
    moments, param_groups = optimizer_tensors(optimizer)
    return Checkpoint(step=step, tensors={**tensors, **moments}, state={
        "losses": [list(pair) for pair in losses], "param_groups": param_groups})


def _restore(checkpoint: Checkpoint, parts: StableDiffusionParts,
             optimizer: torch.optim.Optimizer, rng: torch.Generator) -> int:
    tensors = checkpoint.tensors
    with torch.no_grad():
        for name, parameter in parts.trainable():
            parameter.copy_(tensors[name])
    rng.set_state(tensors["rng"])
    restore_optimizer(optimizer, tensors, checkpoint.state["param_groups"])
    return checkpoint.step
