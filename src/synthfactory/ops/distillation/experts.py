"""The experts a trajectory cell (`mtt`, `datm`) matches, read back from `expert_trajectories`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from synthfactory.ops.distillation.cells import Cell, expert_key
from synthfactory.ops.distillation.cellstore import load_trajectory


def load_experts(require: Callable[..., Path], cell: Cell, n_experts: int,
                 digest_of: Callable[[int], str]) -> list[np.ndarray]:
    """The experts of a trajectory cell's source, each checked to come from these inputs
    (`digest_of(index)`: what expert `index`'s bytes must depend on now)."""
    trajectories = []
    for index in range(n_experts):
        key = expert_key(cell.source, index)
        try:
            path = require("expert_trajectories", f"{key}.safetensors")
        except FileNotFoundError:
            raise FileNotFoundError(f"expert {key} of cell {cell.key} does not exist: "
                                    f"materialize expert_trajectories partition {key} first"
                                    ) from None
        trajectory, meta = load_trajectory(path)
        if meta.get("inputs_digest") != digest_of(index):
            raise ValueError(f"expert {key} ({path}) was trained on other data or settings "
                             f"than cell {cell.key} uses now: materialize expert_trajectories "
                             f"partition {key} first")
        trajectories.append(trajectory)
    return trajectories
