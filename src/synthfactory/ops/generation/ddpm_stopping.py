"""How long the embedded DDPM trains: a ceiling and an evaluation cadence that follow the data,
and a held-out criterion that stops it earlier.

The budget rule (`training_budget`): a diffusion model needs more optimizer steps the more
numbers it has to learn, so the ceiling grows with the training set's size in pixel values,
`values = images × height × width × channels`, as `STEPS_PER_ROOT_VALUE × sqrt(values)`
(sub-linear: larger sets are more redundant), between `MIN_CEILING` and `MAX_CEILING`. The
evaluation cadence is a twentieth of the ceiling (at least `MIN_EVAL_EVERY` steps), so every
ceiling gets the same number of chances to stop. The embedded digits (1,132 train images of
8×8×1: 72k values) get a ceiling of 1,600 steps checked every 80 steps.

The criterion: the EMA model's denoising loss on held-out images (the real validation split,
at most `eval_images` of them, a seeded choice) at `EVAL_TIMESTEPS` fixed timesteps spread over
the schedule, with fixed seeded noise, so the same weights always give the same number. Every
`eval_every` steps the loss is measured; training stops when the best loss of the last
`patience` evaluations is less than a relative `min_delta` below the best before them
(`patience` 0: train to the ceiling). With the defaults (3 evaluations, 5%): stop once the last
3/20 of the ceiling lowered the loss by less than 5%. A denoising loss keeps creeping down long
after the samples stop changing (on the digits about 1% per 80 steps from step 500 on, while
1,200 steps trained no better a classifier than 600: docs/results.md), so the bound is on
diminishing returns, not on a flat curve. A run that reaches the ceiling instead did not
converge by this criterion; the same relative improvement over its last `patience`
evaluations says by how much it was still improving (`recent_improvement`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from synthfactory.ops.tensors import to_model_space

# The budget rule's constants (see the module docstring).
STEPS_PER_ROOT_VALUE = 6.0
MIN_CEILING = 600
MAX_CEILING = 50_000
MIN_EVAL_EVERY = 25
EVALUATIONS_PER_CEILING = 20
# Timesteps at which every held-out image is noised (evenly spread over the schedule).
EVAL_TIMESTEPS = 8


def training_budget(n_images: int, height: int, width: int, channels: int) -> tuple[int, int]:
    """(ceiling, eval_every) for a training set of `n_images` images of height×width×channels."""
    values = max(1, n_images * height * width * channels)
    ceiling = int(min(MAX_CEILING, max(MIN_CEILING,
                                       round(STEPS_PER_ROOT_VALUE * math.sqrt(values), -2))))
    return ceiling, eval_cadence(ceiling)


def eval_cadence(ceiling: int) -> int:
    """Steps between evaluations for a ceiling: a twentieth of it, at least MIN_EVAL_EVERY."""
    return max(MIN_EVAL_EVERY, ceiling // EVALUATIONS_PER_CEILING)


@dataclass(frozen=True)
class ValidationSet:
    """Held-out images noised at fixed timesteps with fixed noise: one row per (image, t)."""

    clean: torch.Tensor
    classes: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor

    def __len__(self) -> int:
        return len(self.clean)


def validation_set(images: np.ndarray, labels: np.ndarray, num_train_timesteps: int,
                   max_images: int, seed: int) -> ValidationSet:
    """At most `max_images` of the held-out images (a seeded choice), each at EVAL_TIMESTEPS
    evenly spread timesteps with noise drawn from `seed`."""
    if len(images) == 0:
        raise ValueError("the generator's validation images are empty: set "
                         "real_images.val_fraction above 0, or generator.ddpm.patience: 0")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)[:max_images].sort().values.numpy()
    clean = to_model_space(images[order])
    classes = torch.from_numpy(np.asarray(labels)[order]).long()
    steps = torch.tensor([int((k + 0.5) * num_train_timesteps / EVAL_TIMESTEPS)
                          for k in range(EVAL_TIMESTEPS)])
    clean = clean.repeat_interleave(EVAL_TIMESTEPS, 0)
    classes = classes.repeat_interleave(EVAL_TIMESTEPS, 0)
    timesteps = steps.repeat(len(order))
    noise = torch.randn(clean.shape, generator=generator)
    return ValidationSet(clean, classes, noise, timesteps)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, scheduler: object, held_out: ValidationSet,
                    device: torch.device, batch_size: int = 512) -> float:
    """The model's mean noise-prediction MSE on the held-out set (conditional, no dropout)."""
    total = 0.0
    for start in range(0, len(held_out), batch_size):
        part = slice(start, start + batch_size)
        noisy = scheduler.add_noise(held_out.clean[part], held_out.noise[part],  # type: ignore[attr-defined]
                                    held_out.timesteps[part])
        prediction = model(noisy.to(device), held_out.timesteps[part].to(device),
                           class_labels=held_out.classes[part].to(device)).sample
        total += float(torch.nn.functional.mse_loss(
            prediction.float(), held_out.noise[part].to(device), reduction="sum"))
    return total / held_out.noise.numel()


def should_stop(curve: Sequence[tuple[int, float]], patience: int, min_delta: float) -> bool:
    """Whether the best loss of `curve` (step, loss) improved by less than a relative
    `min_delta` over its last `patience` evaluations (never with patience 0, nor before there
    are `patience` + 1 evaluations)."""
    if patience <= 0 or len(curve) <= patience:
        return False
    improvement = recent_improvement(curve, patience)
    return improvement is not None and improvement < min_delta


def recent_improvement(curve: Sequence[tuple[int, float]], patience: int) -> float | None:
    """The relative improvement of the best loss over the last `patience` evaluations (over the
    whole curve when it is shorter): how much a run was still improving where it ended."""
    if len(curve) < 2:
        return None
    window = max(1, min(patience, len(curve) - 1))
    before = min(loss for _, loss in curve[:-window])
    after = min(loss for _, loss in curve)
    return (before - after) / before if before > 0 else 0.0
