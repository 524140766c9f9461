"""The embedded generator: a small class-conditional DDPM (diffusers `UNet2DModel` + scheduler).

Training follows the usual recipe: predict the noise added at a random timestep, drop the class
label to a "null" class with probability `cfg_dropout` so one network learns both the conditional
and the unconditional model (classifier-free guidance), and keep an exponential moving average of
the weights for sampling (on a dataset this small, EMA weights give far cleaner samples).

How long it trains is decided on held-out images (`ddpm_stopping.py`): `train_steps` is a
ceiling, and the EMA model's validation denoising loss, measured every `eval_every` steps, stops
it earlier once it no longer improves. The learning rate therefore cannot depend on where
training ends: a linear warm-up over the first `eval_every` steps, then an inverse-square-root
decay (`lr · sqrt(warmup / step)`, as EDM2 trains its diffusion models), so the schedule up to
any step is the same whether the run stops there or goes on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from synthfactory.ops.data.prompts import PromptRecord
from synthfactory.ops.generation import GENERATOR_JSON
from synthfactory.ops.generation.ddpm_stopping import (eval_cadence, should_stop, validation_loss,
                                                       validation_set)
from synthfactory.ops.generation.samplers import DEFAULT, SamplerSettings, build_sampler
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.atomic import dumps_json, sha256_tree
from synthfactory.ops.storage.checkpoint import (Checkpoint, load_checkpoint, optimizer_tensors,
                                                  restore_optimizer, save_checkpoint)
from synthfactory.ops.tensors import to_model_space, to_uint8


def build_unet(resolution: int, channels: int, n_classes: int, widths: Sequence[int]) -> UNet2DModel:
    """A UNet with one down/up level per width and a class embedding with one extra null class."""
    levels = len(widths)
    if resolution % (2 ** (levels - 1)):
        raise ValueError(f"resolution {resolution} is not divisible by 2**{levels - 1}: use fewer "
                         f"generator.ddpm.widths than {list(widths)} or another resolution")
    return UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=tuple(widths), down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels, num_class_embeds=n_classes + 1, norm_num_groups=8)


@dataclass
class TrainingLog:
    """Loss every `every` steps, the wall time of the whole training, the steps run, the held-out
    loss curve (step, loss) and why training ended: `criterion` (the held-out loss stopped
    improving), `ceiling` (it ran `train_steps`) or `fixed` (no held-out images: a fixed length)."""

    losses: list[tuple[int, float]]
    seconds: float
    steps: int = 0
    validation: list[tuple[int, float]] = field(default_factory=list)
    stopped_by: str = "fixed"


def train_ddpm(images: np.ndarray, labels: np.ndarray, n_classes: int, *, widths: Sequence[int],
               train_steps: int, batch_size: int, learning_rate: float, cfg_dropout: float,
               ema_decay: float, num_train_timesteps: int, seed: int, device: torch.device,
               log: Callable[[str], None] | None = None, log_every: int = 100,
               checkpoint_every: int = 0, checkpoint_dir: Path | None = None,
               val_images: np.ndarray | None = None, val_labels: np.ndarray | None = None,
               eval_every: int | None = None, patience: int = 0, min_delta: float = 0.0,
               eval_images: int = 256) -> tuple[UNet2DModel, DDPMScheduler, TrainingLog]:
    """Train the class-conditional DDPM on uint8 images; return its EMA weights and scheduler.

    With held-out `val_images`, the EMA model's denoising loss on them is measured every
    `eval_every` steps (None: `ddpm_stopping.eval_cadence(train_steps)`), and training stops
    once `patience` evaluations in a row improve on the best by less than a relative
    `min_delta` (`ddpm_stopping.py`); `train_steps` is the ceiling. Without them it trains
    exactly `train_steps` steps.

    With `checkpoint_dir` and `checkpoint_every > 0`, the whole training state (weights, EMA,
    optimizer, learning-rate schedule, RNG, loss log, held-out curve) is saved every
    `checkpoint_every` steps, and a later call with the same data and settings resumes from
    it: the result is the same, bit for bit, as an uninterrupted run.
    """
    if len(images) == 0:
        raise ValueError("cannot train the generator on an empty training split")
    eval_every = eval_every or eval_cadence(train_steps)
    held_out = None if val_images is None else validation_set(
        val_images, np.asarray(val_labels), num_train_timesteps, eval_images,
        derive_seed(seed, "generator", "validation"))
    fingerprint = _fingerprint(images, labels, n_classes, seed, widths=list(widths),
                               train_steps=train_steps, batch_size=batch_size,
                               learning_rate=learning_rate, cfg_dropout=cfg_dropout,
                               ema_decay=ema_decay, num_train_timesteps=num_train_timesteps,
                               eval_every=eval_every, patience=patience, min_delta=min_delta,
                               eval_images=eval_images, schedule="warmup-inverse-sqrt",
                               held_out=None if held_out is None else _digest(held_out.clean))
    torch_rng = torch.Generator().manual_seed(derive_seed(seed, "generator", "train"))
    torch.manual_seed(derive_seed(seed, "generator", "init"))
    unet = build_unet(images.shape[1], images.shape[3], n_classes, widths).to(device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps,
                              beta_schedule="squaredcos_cap_v2")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_inverse_sqrt(eval_every))
    data = to_model_space(images)
    targets = torch.from_numpy(labels).long()
    losses: list[tuple[int, float]] = []
    curve: list[tuple[int, float]] = []
    first_step = 0
    resumed = None if checkpoint_dir is None else load_checkpoint(checkpoint_dir, fingerprint)
    if resumed is not None:
        first_step = _restore(resumed, unet, ema, optimizer, schedule, torch_rng)
        losses = [(int(step), float(loss)) for step, loss in resumed.state["losses"]]
        curve = [(int(step), float(loss)) for step, loss in resumed.state.get("validation", [])]
        if log is not None:
            log(f"generator training: resuming from the checkpoint at step "
                f"{first_step}/{train_steps} in {checkpoint_dir}")
    started = time.perf_counter()
    stopped_by = "fixed" if held_out is None else "ceiling"
    done = first_step
    unet.train()
    for step in range(first_step, train_steps):
        batch = torch.randint(0, len(data), (batch_size,), generator=torch_rng)
        clean = data[batch]
        classes = targets[batch].clone()
        classes[torch.rand(batch_size, generator=torch_rng) < cfg_dropout] = n_classes
        noise = torch.randn(clean.shape, generator=torch_rng)
        timesteps = torch.randint(0, num_train_timesteps, (batch_size,), generator=torch_rng)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        prediction = unet(noisy.to(device), timesteps.to(device), class_labels=classes.to(device))
        loss = torch.nn.functional.mse_loss(prediction.sample, noise.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        # Warm-up of the EMA decay: early weights are noise, so average over ~step steps at first.
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, live in zip(ema.parameters(), unet.parameters(), strict=True):
                averaged.lerp_(live, 1.0 - decay)
        if step % log_every == 0 or step == train_steps - 1:
            losses.append((step, loss.item()))
            if log is not None:
                log(f"generator training step {step + 1}/{train_steps}: loss {losses[-1][1]:.4f}, "
                    f"{time.perf_counter() - started:.0f}s")
        done = step + 1
        if held_out is not None and done % eval_every == 0:
            curve.append((done, validation_loss(ema, scheduler, held_out, device)))
            if log is not None:
                log(f"generator validation at step {done}: loss {curve[-1][1]:.5f}")
            if should_stop(curve, patience, min_delta):
                stopped_by = "criterion"
                break
        if checkpoint_dir is not None and checkpoint_every and done % checkpoint_every == 0 \
                and done < train_steps:
            save_checkpoint(checkpoint_dir, fingerprint, _snapshot(
                done, unet, ema, optimizer, schedule, torch_rng, losses, curve))
    if log is not None and held_out is not None:
        log(f"generator training stopped at step {done}/{train_steps} by the {stopped_by}")
    return ema, scheduler, TrainingLog(losses=losses, seconds=time.perf_counter() - started,
                                       steps=done, validation=curve, stopped_by=stopped_by)


def _warmup_inverse_sqrt(warmup: int) -> Callable[[int], float]:
    """The learning-rate factor after `step` steps: linear warm-up, then 1/sqrt decay."""
    warmup = max(1, warmup)

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else (warmup / (step + 1)) ** 0.5

    return factor


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()


def _fingerprint(images: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
                 **settings: Any) -> str:
    """What a checkpoint was trained on: data bytes, labels, classes, seed and settings."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
    digest.update(json.dumps({"shape": list(images.shape), "n_classes": n_classes, "seed": seed,
                              **settings}, sort_keys=True).encode())
    return digest.hexdigest()


def _snapshot(step: int, unet: UNet2DModel, ema: UNet2DModel, optimizer: torch.optim.Optimizer,
              schedule: torch.optim.lr_scheduler.LRScheduler, rng: torch.Generator,
              losses: list[tuple[int, float]], curve: list[tuple[int, float]]) -> Checkpoint:
    """The training state after `step` steps, as tensors and JSON."""
    tensors = {f"unet/{k}": v for k, v in unet.state_dict().items()}
    tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    tensors["rng"] = rng.get_state()
    moments, param_groups = optimizer_tensors(optimizer)
    return Checkpoint(step=step, tensors={**tensors, **moments}, state={
        "losses": [list(pair) for pair in losses], "validation": [list(pair) for pair in curve],
        "schedule": schedule.state_dict(),
        "param_groups": param_groups})


def _restore(checkpoint: Checkpoint, unet: UNet2DModel, ema: UNet2DModel,
             optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
             rng: torch.Generator) -> int:
    """Load a snapshot into freshly built training objects; return the step to continue from."""
    tensors = checkpoint.tensors
    unet.load_state_dict({k.removeprefix("unet/"): v for k, v in tensors.items()
                          if k.startswith("unet/")})
    ema.load_state_dict({k.removeprefix("ema/"): v for k, v in tensors.items()
                         if k.startswith("ema/")})
    rng.set_state(tensors["rng"])
    restore_optimizer(optimizer, tensors, checkpoint.state["param_groups"])
    schedule.load_state_dict(checkpoint.state["schedule"])
    return checkpoint.step


def save_generator(directory: Path, unet: UNet2DModel, scheduler: DDPMScheduler,
                   info: dict[str, Any]) -> dict[str, Any]:
    """Save weights (safetensors) and scheduler with `save_pretrained`, then `generator.json`.

    The content digest covers every file but `generator.json` itself; it is written last.
    """
    unet.save_pretrained(directory / "unet", safe_serialization=True)
    scheduler.save_pretrained(directory / "scheduler")
    record = {**info, "digest": sha256_tree(directory)}
    (directory / GENERATOR_JSON).write_text(dumps_json(record))
    return record


class DdpmGenerator:
    """A trained class-conditional DDPM loaded from a generator directory, ready to sample."""

    def __init__(self, directory: Path, device: torch.device, dtype: torch.dtype) -> None:
        info_path = directory / GENERATOR_JSON
        if not info_path.is_file():
            raise FileNotFoundError(f"{directory} holds no {GENERATOR_JSON}: materialize the "
                                    "'generator' asset first")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        self.device, self.dtype = device, dtype
        self.unet = UNet2DModel.from_pretrained(directory / "unet", use_safetensors=True,
                                                local_files_only=True, torch_dtype=dtype,
                                                low_cpu_mem_usage=False)
        self.unet = self.unet.to(device).eval()
        self.scheduler_config = DDPMScheduler.load_config(directory / "scheduler")
        self.null_class = int(self.info["n_classes"])

    @property
    def digest(self) -> str:
        """The content digest recorded when the generator was saved."""
        return str(self.info["digest"])

    def make_scheduler(self, name: str, steps: int) -> Any:
        """A fresh sampler (schedulers keep per-run state) set to `steps` steps; default is DDIM."""
        scheduler = build_sampler("ddim" if name == DEFAULT else name, self.scheduler_config)
        scheduler.set_timesteps(steps)
        return scheduler

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """Per-image starting noise: image i's noise depends only on seeds[i]."""
        channels = self.unet.config.in_channels
        size = self.unet.config.sample_size
        return torch.stack([
            torch.randn((channels, size, size), generator=torch.Generator().manual_seed(seed))
            for seed in seeds])

    def render(self, records: Sequence[PromptRecord], seeds: Sequence[int],
               settings: SamplerSettings) -> tuple[np.ndarray, list[str | None]]:
        """Images for prompt records (class, guidance) with the given seeds, and per-image problems.

        A problem is `nonfinite` (NaN/inf in the output) or `black` (every pixel 0).
        """
        latents = self._denoise([r.class_id for r in records], seeds,
                                [r.guidance for r in records], settings.steps, settings.scheduler)
        images = to_uint8(latents)
        finite = torch.isfinite(latents).flatten(1).all(1).cpu().numpy()
        problems = [None if ok and image.max() > 0 else ("nonfinite" if not ok else "black")
                    for ok, image in zip(finite, images, strict=True)]
        return images, problems

    def sample(self, class_ids: Sequence[int], seeds: Sequence[int], guidance: Sequence[float],
               steps: int, scheduler_name: str = "ddim") -> np.ndarray:
        """Generate one image per (class, seed, guidance scale); uint8 N×H×W×C."""
        return to_uint8(self._denoise(class_ids, seeds, guidance, steps, scheduler_name))

    @torch.no_grad()
    def _denoise(self, class_ids: Sequence[int], seeds: Sequence[int], guidance: Sequence[float],
                 steps: int, scheduler_name: str) -> torch.Tensor:
        """Latents after the guided reverse process, in model space ([-1, 1] when all went well)."""
        scheduler = self.make_scheduler(scheduler_name, steps)
        latents = self.initial_noise(seeds).to(self.device, self.dtype)
        latents = latents * scheduler.init_noise_sigma
        classes = torch.tensor(list(class_ids), device=self.device)
        both = torch.cat([classes, torch.full_like(classes, self.null_class)])
        scale = torch.tensor(list(guidance), device=self.device, dtype=self.dtype).view(-1, 1, 1, 1)
        for timestep in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
            noise = self.unet(model_input, timestep, class_labels=both).sample
            conditional, unconditional = noise.chunk(2)
            guided = unconditional + scale * (conditional - unconditional)
            latents = scheduler.step(guided, timestep, latents).prev_sample
        return latents
