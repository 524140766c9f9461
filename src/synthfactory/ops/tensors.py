"""Conversions between stored images (uint8 N×H×W×C) and model tensors (float N×C×H×W in [-1, 1]),
and torch's deterministic mode."""

from __future__ import annotations

import os

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


def use_deterministic_algorithms(enabled: bool = True) -> None:
    """Make torch pick deterministic kernels wherever it has one, on CPU and CUDA.

    On CPU the project's computations are deterministic anyway (byte-identical outputs, tested).
    On CUDA this selects deterministic cuDNN convolutions and, with `CUBLAS_WORKSPACE_CONFIG`
    (set here unless the user set it; it must be set before cuBLAS starts, i.e. before the
    first CUDA matmul of the process), deterministic cuBLAS. Ops that have no deterministic
    CUDA kernel warn instead of failing (`warn_only`): among the project's, the backward of
    `grid_sample` (the differentiable augmentation of distribution matching), so `dm` on CUDA
    is not bit-reproducible from run to run; torch names such an op in the warning.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
