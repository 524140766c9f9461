"""Training checkpoints: tensors as safetensors, everything else as JSON, published atomically.

A checkpoint directory holds `state.safetensors` (weights, optimizer moments, RNG state) and
`step.json` (the step reached, the loss log, scheduler and optimizer settings, and a fingerprint
of what was being trained). It replaces the previous checkpoint as a whole, so a kill while one
is written leaves the previous one. A checkpoint whose fingerprint differs (other settings,
other data, other seed) is never resumed from.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from synthfactory.ops.storage.atomic import atomic_dir, dumps_json

STATE_FILE = "state.safetensors"
STEP_FILE = "step.json"


@dataclass
class Checkpoint:
    """What a training loop needs to continue exactly where it stopped."""

    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


def save_checkpoint(directory: Path, fingerprint: str, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint in `directory` with this one, atomically."""
    with atomic_dir(directory) as temp:
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in checkpoint.tensors.items()}
        save_file(tensors, str(temp / STATE_FILE))
        (temp / STEP_FILE).write_text(dumps_json(
            {"step": checkpoint.step, "fingerprint": fingerprint, "state": checkpoint.state}))


def load_checkpoint(directory: Path, fingerprint: str) -> Checkpoint | None:
    """The checkpoint in `directory` if it was written for `fingerprint`, else None."""
    step_path = directory / STEP_FILE
    if not step_path.is_file():
        return None
    record = json.loads(step_path.read_text())
    if record["fingerprint"] != fingerprint:
        return None
    return Checkpoint(step=int(record["step"]), tensors=load_file(str(directory / STATE_FILE)),
                      state=record["state"])


def remove_checkpoint(directory: Path) -> None:
    """Delete a checkpoint directory once the finished model is published."""
    if directory.exists():
        shutil.rmtree(directory)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """An optimizer's state as checkpoint tensors (`optimizer/<param index>/<moment>`) and its
    param groups (JSON), for `restore_optimizer`."""
    state = optimizer.state_dict()
    tensors = {f"optimizer/{index}/{key}": value
               for index, moments in state["state"].items() for key, value in moments.items()}
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      param_groups: list) -> None:
    """Load what `optimizer_tensors` saved into a freshly built optimizer."""
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/")
            moments.setdefault(int(index), {})[key] = value
    for group in param_groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])  # JSON made the tuple a list
    optimizer.load_state_dict({"state": moments, "param_groups": param_groups})
