"""Classifier augmentation: random small affine warps (shift, scale, rotation, optional flip)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_affine(n: int, resolution: int, generator: torch.Generator, *,
                  flip: bool) -> torch.Tensor:
    """n random affine matrices (N×2×3): translation up to resolution/8 px (at least 1 px),
    scale in [0.9, 1.1], rotation within ±10°, and a horizontal flip half the time if `flip`."""
    shift = max(1, resolution // 8) * 2.0 / resolution  # in normalised [-1, 1] coordinates
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(n, generator=generator) * 0.2
    tx, ty = ((torch.rand(2, n, generator=generator) * 2 - 1) * shift).unbind(0)
    mirror = torch.ones(n)
    if flip:
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos * mirror, -sin, tx], 1),
                        torch.stack([sin * mirror, cos, ty], 1)], 1)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply affine matrices to images in [-1, 1] (differentiable), padding with -1."""
    theta = theta.to(images).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # grid_sample pads with zeros: shift so that the padding is -1, the background value.
    return F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) - 1


def augment(images: torch.Tensor, generator: torch.Generator, *, flip: bool) -> torch.Tensor:
    """Standard augmentation with random parameters per sample (see `random_affine`).

    Digits must not be flipped, so flipping is opt-in.
    """
    theta = random_affine(images.shape[0], images.shape[-1], generator, flip=flip)
    return warp(images, theta)

