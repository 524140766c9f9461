"""Conversions between stored images (uint8 N×H×W×C) and model tensors (float N×C×H×W in [-1, 1])."""

from __future__ import annotations

import numpy as np
import torch


def to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C → float32 N×C×H×W in [-1, 1]."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images of shape N×H×W×C, got {images.dtype} "
                         f"{images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(samples: torch.Tensor) -> np.ndarray:
    """float N×C×H×W in [-1, 1] → uint8 N×H×W×C (clipped, rounded)."""
    scaled = samples.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()
