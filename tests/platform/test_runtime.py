"""The torch runtime resource: device names validated, `auto` resolved, missing CUDA refused."""

from __future__ import annotations

import pytest
import torch

from synthfactory.resources.runtime import TorchRuntime, resolve_device


def test_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert TorchRuntime(device="auto").torch_device.type == expected
    assert TorchRuntime(dtype="bfloat16").torch_dtype == torch.bfloat16


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", ""])
def test_unknown_devices_are_rejected(device: str) -> None:
    with pytest.raises(ValueError, match="is not one of auto, cpu, cuda"):
        TorchRuntime(device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        resolve_device("cuda:1")
