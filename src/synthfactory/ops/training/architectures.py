"""The classifier of the dataset-distillation literature: a small ConvNet.

`depth` blocks of conv3×3 → instance norm → ReLU → 2×2 average pool, then one linear layer. The
depth follows the resolution (DD papers use ConvNet-3 at 32 px, ConvNet-4 at 64 px): every block
halves the image, and the last feature map stays at least 2×2.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def default_depth(resolution: int) -> int:
    """Blocks for a resolution: log2(resolution) − 2, at least 2 (8 px → 2, 32 px → 3, 64 px → 4)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution {resolution} must be a power of two >= 4 for the ConvNet")
    return max(2, int(math.log2(resolution)) - 2)


class ConvNet(nn.Module):
    """conv-norm-relu-pool blocks and a linear head; `embed` gives the flattened features."""

    def __init__(self, channels: int, n_classes: int, resolution: int, width: int = 128,
                 depth: int | None = None) -> None:
        super().__init__()
        depth = default_depth(resolution) if depth is None else depth
        if resolution >> depth < 1:
            raise ValueError(f"depth {depth} pools a {resolution}px image below 1px")
        blocks: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth):
            blocks += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                       # GroupNorm with one group per channel is instance norm with affine weights,
                       # the "instancenorm" of the DD ConvNet.
                       nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True),
                       nn.AvgPool2d(kernel_size=2, stride=2)]
            in_channels = width
        self.features = nn.Sequential(*blocks)
        self.embedding_dim = width * (resolution >> depth) ** 2
        self.classifier = nn.Linear(self.embedding_dim, n_classes)
        self.config = {"channels": channels, "n_classes": n_classes, "resolution": resolution,
                       "width": width, "depth": depth}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Flattened features of N×C×H×W images (the judge's feature space)."""
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classifier(self.embed(images))
