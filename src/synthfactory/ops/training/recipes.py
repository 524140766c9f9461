"""Training recipes per architecture, and the numeric precision a device trains in.

A recipe is what the literature trains each architecture with, so that a number from this tool
can be set beside a published one. Every recipe is SGD with momentum 0.9 and cosine decay of the
learning rate to zero over the run (per step), with weight decay on every parameter:

- `convnet`: the dataset-distillation papers' evaluation (Zhao et al., DC/DSA/DM code): SGD,
  lr 0.01, momentum 0.9, weight decay 5e-4. Deviation: they use batch 256 and one ×0.1 step at
  half the epochs; here batch 128 and cosine decay (the project's measured default since issue 1).
- `resnet18`: the common CIFAR recipe (e.g. kuangliu/pytorch-cifar, the synthetic-data papers
  that report CIFAR-10 ResNet-18): lr 0.1, batch 128, weight decay 5e-4, cosine decay.
- `resnet50`: torchvision's ImageNet reference recipe (lr 0.1 per 256 images, weight decay 1e-4,
  label smoothing 0.1 as in its "new" recipe, cosine decay). Deviations: no warm-up, no EMA, no
  mixup/cutmix, and no decay exclusion for norm parameters.
- `vgg11`: the CIFAR VGG recipe (chengyangfu/pytorch-vgg-cifar10): lr 0.05, batch 128,
  weight decay 5e-4. Deviation: cosine decay instead of halving every 30 epochs.

Any field can be overridden; a batch size changed without a learning rate scales the learning
rate linearly (Goyal et al., "Accurate, large minibatch SGD"), so the recipe stays the same
recipe at another batch size.

Precision: on CUDA, training runs under bf16 autocast (where the GPU supports bf16) with
channels-last memory format; on CPU it stays float32 and contiguous, as the tests require.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Recipe:
    """The optimisation settings of one architecture (SGD with momentum, cosine decay)."""

    learning_rate: float
    batch_size: int
    weight_decay: float
    momentum: float = 0.9
    label_smoothing: float = 0.0


RECIPES: dict[str, Recipe] = {
    "convnet": Recipe(learning_rate=0.01, batch_size=128, weight_decay=5e-4),
    "resnet18": Recipe(learning_rate=0.1, batch_size=128, weight_decay=5e-4),
    "resnet50": Recipe(learning_rate=0.1, batch_size=256, weight_decay=1e-4, label_smoothing=0.1),
    "vgg11": Recipe(learning_rate=0.05, batch_size=128, weight_decay=5e-4),
}


def recipe_for(architecture: str, *, learning_rate: float | None = None,
               batch_size: int | None = None, weight_decay: float | None = None,
               label_smoothing: float | None = None) -> Recipe:
    """The recipe of `architecture` with the given fields overridden (None keeps the recipe's).

    A batch size given without a learning rate scales the recipe's learning rate by
    batch_size / recipe batch size (the linear scaling rule).
    """
    if architecture not in RECIPES:
        raise ValueError(f"classifiers.architecture {architecture!r} has no training recipe; "
                         f"recipes exist for {', '.join(RECIPES)}")
    base = RECIPES[architecture]
    recipe = base
    if batch_size is not None:
        recipe = replace(recipe, batch_size=batch_size,
                         learning_rate=base.learning_rate * batch_size / base.batch_size)
    if learning_rate is not None:
        recipe = replace(recipe, learning_rate=learning_rate)
    if weight_decay is not None:
        recipe = replace(recipe, weight_decay=weight_decay)
    if label_smoothing is not None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"classifiers.label_smoothing {label_smoothing} must be in [0, 1)")
        recipe = replace(recipe, label_smoothing=label_smoothing)
    return recipe


@dataclass(frozen=True)
class PrecisionPlan:
    """How a training step computes: the autocast dtype (None: float32) and the memory format."""

    autocast: Literal["bfloat16"] | None
    channels_last: bool

    def describe(self) -> str:
        """A short label for histories and reports, e.g. `bf16 autocast, channels-last`."""
        parts = ["bf16 autocast" if self.autocast else "fp32",
                 "channels-last" if self.channels_last else "contiguous"]
        return ", ".join(parts)


def precision_plan(precision: Precision, device_type: str, *, bf16_supported: bool,
                   channels_last: bool | None = None) -> PrecisionPlan:
    """What `classifiers.precision` (and `channels_last`) mean on a device.

    `auto`: bf16 autocast and channels-last on a CUDA device that supports bf16 (Ampere and
    later), channels-last alone on an older CUDA GPU (fp16 would need a gradient scaler), float32
    and the default layout on CPU — the CPU results stay bit-reproducible. `bf16` asks for
    autocast on any device (on CPU it runs, slowly: useful to exercise the path) and is an error
    on a CUDA GPU without bf16. `fp32` never autocasts. `channels_last` None follows the device
    (on for CUDA), True/False force it.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"classifiers.precision {precision!r} is not one of auto, fp32, bf16")
    cuda = device_type == "cuda"
    if precision == "bf16" and cuda and not bf16_supported:
        raise ValueError("classifiers.precision 'bf16' was asked for, but this CUDA GPU has no "
                         "bf16 support: use precision auto or fp32")
    use_bf16 = precision == "bf16" or (precision == "auto" and cuda and bf16_supported)
    layout = cuda if channels_last is None else channels_last
    return PrecisionPlan(autocast="bfloat16" if use_bf16 else None, channels_last=layout)
