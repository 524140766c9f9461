"""The experts a trajectory cell (`mtt`, `datm`) matches: trained and published one partition at
a time (`expert_trajectories`, `<source>-expert-<k>.safetensors`), and read back by the cells."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.distillation.cells import Cell, expert_key, parse_expert
from synthfactory.ops.distillation.cellstore import load_trajectory, save_trajectory
from synthfactory.ops.distillation.dsa import DSA
from synthfactory.ops.distillation.partitions import expert_digest
from synthfactory.ops.distillation.trajectories import train_expert
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.artifacts import Artifacts, Log

ASSET = "expert_trajectories"


@dataclass(frozen=True)
class ExpertSettings:
    """What the params fix of the experts (the `expert_trajectories` section, the network and
    DSA of `distilled_set`, as plain values) and the recipe of `expert_digest`."""

    epochs: int
    learning_rate: float
    momentum: float
    batch_size: int
    dsa: dict[str, Any]
    architecture: str
    width: int
    seed: int
    recipe: dict[str, Any]


def train_experts(store: Artifacts, keys: list[str], n_classes: int,
                  source_of: Callable[[str], Any], settings: ExpertSettings, device: Any,
                  log: Log) -> Iterator[dict[str, Any]]:
    """Train the experts `keys` (`<source>-expert-<k>`), each published as it finishes, or kept
    when a run before this one finished it from the same inputs; yield each expert's row as it
    is published (`key`, `path`, what it trained on, `kept`, loss, `seconds`).
    `source_of(source)` is a source's training set, read once per run."""
    sources: dict[str, Any] = {}
    for key in keys:
        source, index = parse_expert(key)
        if source not in sources:  # one read of each source for all its experts
            sources[source] = source_of(source)
        data = sources[source]
        digest = expert_digest(data, settings.recipe, settings.seed, index)
        path = store.path(ASSET, f"{key}.safetensors")
        started = time.perf_counter()
        row: dict[str, Any] = {"key": key, "source": source, "expert": index,
                               "n_train": len(data.images), "epochs": settings.epochs,
                               "inputs_digest": digest}
        if path.is_file() and load_trajectory(path)[1].get("inputs_digest") == digest:
            log(f"expert {key}: already finished from the same inputs, kept")
            store.push(ASSET, path.name)  # a crash may predate the upload
            row["kept"] = True
        else:
            trajectory, history = train_expert(
                data.images, data.labels, n_classes,
                seed=derive_seed(settings.seed, ASSET, source, index), device=device,
                epochs=settings.epochs, learning_rate=settings.learning_rate,
                momentum=settings.momentum, batch_size=settings.batch_size,
                dsa=DSA(**settings.dsa), architecture=settings.architecture,
                width=settings.width)
            with store.publish_file(ASSET, path.name) as temp:
                save_trajectory(temp, trajectory, {
                    "inputs_digest": digest, "epochs": settings.epochs, "source": source,
                    "architecture": settings.architecture, "width": settings.width})
            log(f"expert {key}: {settings.epochs} epochs, final loss {history['loss'][-1]:.4f}")
            row.update(kept=False, final_loss=round(history["loss"][-1], 4),
                       parameters=history["parameters"])
        row.update(seconds=round(time.perf_counter() - started, 1), path=str(path))
        yield row


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
