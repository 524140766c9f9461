"""The torch runtime resource: device names validated, `auto` resolved, missing CUDA refused."""

from __future__ import annotations

import dagster as dg
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


def test_setup_turns_on_deterministic_algorithms() -> None:
    """Deterministic kernels are on for every step unless `runtime.deterministic: false`."""
    try:
        TorchRuntime(device="cpu").setup_for_execution(dg.build_init_resource_context())
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        TorchRuntime(device="cpu", deterministic=False).setup_for_execution(
            dg.build_init_resource_context())
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
