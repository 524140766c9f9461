"""The torch runtime: device, dtype, seed and threads as explicit config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

if TYPE_CHECKING:
    import torch


class TorchRuntime(dg.ConfigurableResource):
    """Where and how tensors are computed.

    `device` is `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:<index>`; `threads`
    caps torch's CPU threads (null keeps torch's default); `deterministic` asks torch for
    deterministic kernels wherever it has them (see `ops.tensors.use_deterministic_algorithms`:
    CUDA results are then reproducible except where an op has no deterministic kernel). torch
    is imported only when a step starts, never when the definitions load.

    `devices` > 1 trains the classifiers with DistributedDataParallel, one process per device
    (torchrun from the step; CUDA with NCCL, or CPU processes with gloo). Training data larger
    than `in_memory_mb` (decoded uint8 images) — and every set under DDP — streams from its
    shards through `workers` DataLoader processes per device with a `shuffle_buffer` of samples.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, gt=0)
    deterministic: bool = True
    devices: int = Field(default=1, gt=0)
    workers: int = Field(default=2, ge=0)
    shuffle_buffer: int = Field(default=5000, ge=0)
    in_memory_mb: float = Field(default=512.0, ge=0)

    _device: str | None = PrivateAttr(default=None)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        base, _, index = device.partition(":")
        if base not in {"auto", "cpu", "cuda"} or (index and (base != "cuda" or not index.isdigit())):
            raise ValueError(f"runtime.device {device!r} is not one of auto, cpu, cuda, cuda:<index>")
        return device

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Resolve `auto`, check that the device exists, apply the thread cap and the
        deterministic mode (before the step's first CUDA call)."""
        # deferred: torch, and tensors (which imports it): resources load with the code location
        import torch

        from synthfactory.ops.tensors import use_deterministic_algorithms

        self._device = resolve_device(self.device)
        use_deterministic_algorithms(self.deterministic)
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    @property
    def torch_device(self) -> torch.device:
        """The resolved device."""
        import torch

        return torch.device(self._device or resolve_device(self.device))

    @property
    def torch_dtype(self) -> torch.dtype:
        """The configured dtype as a torch dtype."""
        import torch

        return getattr(torch, self.dtype)


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when available else `cpu`; an unavailable CUDA device is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device {device!r} was asked for but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device: auto or cpu")
    return device
