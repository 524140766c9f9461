"""Training recipes per architecture and the precision a device trains in: the recipe values,
the linear scaling rule, the CUDA/CPU selection logic (decided on CPU from the device type), and
that bf16 autocast, channels-last and label smoothing really reach the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthfactory.ops.training.recipes import RECIPES, precision_plan, recipe_for
from synthfactory.ops.training.train import ClassifierSettings, train_classifier
from tests.ops.training.test_train import quadrant_images

CPU = torch.device("cpu")


def test_each_architecture_has_its_literature_recipe() -> None:
    assert set(RECIPES) == {"convnet", "resnet18", "resnet50", "vgg11"}
    # The convnet recipe is the project's measured default; changing it changes every number.
    assert (RECIPES["convnet"].learning_rate, RECIPES["convnet"].batch_size,
            RECIPES["convnet"].weight_decay) == (0.01, 128, 5e-4)
    assert (RECIPES["resnet18"].learning_rate, RECIPES["resnet18"].weight_decay) == (0.1, 5e-4)
    assert RECIPES["resnet50"].label_smoothing == 0.1 and RECIPES["resnet50"].batch_size == 256
    assert all(recipe.momentum == 0.9 for recipe in RECIPES.values())


def test_overrides_and_the_linear_scaling_rule() -> None:
    assert recipe_for("resnet18") == RECIPES["resnet18"]
    # A batch size alone scales the learning rate: 0.1 at 128 → 0.2 at 256.
    assert recipe_for("resnet18", batch_size=256).learning_rate == pytest.approx(0.2)
    # An explicit learning rate wins over the scaling.
    both = recipe_for("resnet18", batch_size=256, learning_rate=0.05)
    assert (both.batch_size, both.learning_rate) == (256, 0.05)
    assert recipe_for("vgg11", weight_decay=0.0, label_smoothing=0.2).label_smoothing == 0.2
    with pytest.raises(ValueError, match="'alexnet' has no training recipe"):
        recipe_for("alexnet")
    with pytest.raises(ValueError, match=r"label_smoothing 1.0 must be in \[0, 1\)"):
        recipe_for("convnet", label_smoothing=1.0)


@pytest.mark.parametrize(("precision", "device", "bf16", "expected"), [
    ("auto", "cuda", True, ("bfloat16", True)),     # Ampere and later: bf16 autocast
    ("auto", "cuda", False, (None, True)),          # older GPUs: fp32, channels-last still helps
    ("auto", "cpu", False, (None, False)),          # CPU: float32, default layout (bit-exact)
    ("fp32", "cuda", True, (None, True)),
    ("bf16", "cpu", False, ("bfloat16", False)),    # asked for: runs on CPU too (tests use it)
])
def test_precision_follows_the_device(precision: str, device: str, bf16: bool,
                                      expected: tuple[str | None, bool]) -> None:
    plan = precision_plan(precision, device, bf16_supported=bf16)
    assert (plan.autocast, plan.channels_last) == expected


def test_precision_refuses_what_the_device_cannot_do() -> None:
    with pytest.raises(ValueError, match="no bf16 support"):
        precision_plan("bf16", "cuda", bf16_supported=False)
    with pytest.raises(ValueError, match="'fp16' is not one of auto, fp32, bf16"):
        precision_plan("fp16", "cuda", bf16_supported=True)  # type: ignore[arg-type]
    assert precision_plan("auto", "cuda", bf16_supported=True, channels_last=False).channels_last \
        is False


def test_bf16_autocast_and_channels_last_reach_the_model() -> None:
    """The plan is applied, not only recorded: the convolutions compute in bf16 on
    channels-last inputs (a forward hook sees it), and training still learns."""
    images, labels = quadrant_images()
    # RGB: with one channel, NCHW and channels-last strides coincide and the check proves nothing.
    images = np.repeat(images, 3, axis=3)
    seen: list[tuple[torch.dtype, bool]] = []

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
             output: torch.Tensor) -> None:
        if module.training:
            seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    original = torch.nn.Conv2d.forward

    def forward(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        output = original(self, x)
        hook(self, (x,), output)
        return output

    plan = precision_plan("bf16", "cpu", bf16_supported=False, channels_last=True)
    torch.nn.Conv2d.forward = forward  # type: ignore[method-assign]
    try:
        _, history = train_classifier(images, labels, 3, ClassifierSettings(
            epochs=1, min_steps=40, batch_size=32, width=16, precision=plan), seed=0, device=CPU)
    finally:
        torch.nn.Conv2d.forward = original  # type: ignore[method-assign]
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen)
    assert seen[0][1]  # the first convolution's input is channels-last
    assert history["precision"] == "bf16 autocast, channels-last"
    assert history["train_accuracy"] >= 0.9 and np.isfinite(history["loss"][-1][1])


def test_label_smoothing_changes_the_loss_and_is_recorded() -> None:
    images, labels = quadrant_images()
    losses = {}
    for smoothing in (0.0, 0.2):
        _, history = train_classifier(images, labels, 3, ClassifierSettings(
            epochs=1, min_steps=1, batch_size=32, width=16, label_smoothing=smoothing),
            seed=0, device=CPU)
        losses[smoothing] = history["loss"][0][1]
        assert history["label_smoothing"] == smoothing
    assert losses[0.2] > losses[0.0]  # smoothed targets: the first step's loss is higher
