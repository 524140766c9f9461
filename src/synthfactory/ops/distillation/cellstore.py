"""On-disk form of distilled cells and expert trajectories (safetensors; no pickle).

    distilled_set/cells/<method>-ipc<N>-<source>/
        repeat-<r>.safetensors   float32 images N×C×H×W (model space), int64 labels,
                                 float32 soft_labels N×K (when the set has them)
        repeat-<r>.tar (+ .json) the same images as uint8 PNGs (viewing; clipped to [-1, 1])
        cell.json                method, ipc, source, inputs digest, the method's settings,
                                 per-repeat history (what ran: iterations, loops, counts),
                                 budget_fraction (share of the reference's budget), seconds
    expert_trajectories/<source>-expert-<k>.safetensors
                                 float32 (epochs + 1) × P: the parameters after every epoch

Each cell directory and each expert file is one Dagster partition, published on its own (a
temporary sibling renamed into place), so runs of different cells never touch each other's files.

The float32 file is the training source of truth; PNGs round to 8 bits and clip. The model space
is x = uint8 / 127.5 − 1 (recorded in every file's metadata as `normalisation`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from synthfactory.ops.distillation.budget import budget_fraction
from synthfactory.ops.distillation.cells import Cell
from synthfactory.ops.distillation.export import to_uint8_nhwc
from synthfactory.ops.distillation.recipes import DistilledRepeat
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import Sample, write_shard

CELLS_DIR = "cells"
CELL_JSON = "cell.json"
NORMALISATION = "x = uint8 / 127.5 - 1 (model space [-1, 1]; learned values may lie outside)"


def cell_dir(root: Path, cell: Cell | str) -> Path:
    """The directory of one cell under a distilled_set directory."""
    return root / CELLS_DIR / (cell if isinstance(cell, str) else cell.key)


def write_cell(directory: Path, cell: Cell, repeats: list[DistilledRepeat], info: dict[str, Any]
               ) -> dict[str, Any]:
    """Write every repeat (safetensors + PNG shard) and cell.json last; return cell.json's data.

    `info` holds the method's `settings` as they ran (the params section); cell.json adds
    `budget_fraction`, the share of the reference implementation's budget that ran
    (`ops.distillation.budget`), from those settings and the first repeat's history."""
    directory.mkdir(parents=True, exist_ok=True)
    histories = []
    for index, repeat in enumerate(repeats):
        tensors = {"images": torch.from_numpy(np.ascontiguousarray(repeat.images, np.float32)),
                   "labels": torch.from_numpy(repeat.labels.astype(np.int64))}
        if repeat.soft_labels is not None:
            tensors["soft_labels"] = torch.from_numpy(repeat.soft_labels.astype(np.float32))
        # One metadata key: safetensors writes a metadata map in no fixed order, and the same
        # params must give the same bytes.
        meta = {"distilled": json.dumps({"cell": cell.key, "repeat": index,
                                         "normalisation": NORMALISATION,
                                         "learned_lr": repeat.learned_lr}, sort_keys=True)}
        save_file(tensors, str(directory / f"repeat-{index}.safetensors"), metadata=meta)
        pixels = to_uint8_nhwc(repeat.images)
        samples = (Sample(key=f"{cell.key}-r{index}-{i:05d}", image=pixels[i],
                          label=int(repeat.labels[i]),
                          meta={"method": cell.method, "origin": repeat.origins[i]
                                if repeat.origins else cell.method,
                                **({"soft_label": repeat.soft_labels[i].round(6).tolist()}
                                   if repeat.soft_labels is not None else {})})
                   for i in range(len(pixels)))
        write_shard(directory / f"repeat-{index}.tar", samples)
        history = {key: value for key, value in repeat.history.items() if key != "loss"}
        histories.append({"repeat": index, "n_images": len(repeat.images),
                          "pixels_outside_fraction": round(float(
                              np.mean(np.abs(repeat.images) > 1.0)), 6),
                          "learned_lr": repeat.learned_lr, **history})
    record = {"cell": cell.key, "method": cell.method, "ipc": cell.ipc, "source": cell.source,
              "repeats": histories, "normalisation": NORMALISATION,
              "budget_fraction": budget_fraction(cell.method, cell.ipc,
                                                 info.get("settings") or {},
                                                 repeats[0].history if repeats else {}),
              **info}
    (directory / CELL_JSON).write_text(dumps_json(record))
    return record


def read_cell_record(directory: Path) -> dict[str, Any] | None:
    """cell.json of a finished cell, or None when the cell is missing or unfinished."""
    path = directory / CELL_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def read_cell(directory: Path) -> list[DistilledRepeat]:
    """Every repeat of a finished cell, float32 as it was learned."""
    if read_cell_record(directory) is None:
        raise FileNotFoundError(f"{directory} is not a finished distilled cell (no {CELL_JSON}): "
                                "materialize distilled_set")
    repeats = []
    for path in sorted(directory.glob("repeat-*.safetensors"),
                       key=lambda p: int(p.stem.split("-")[1])):
        with safe_open(str(path), framework="pt") as handle:
            names = set(handle.keys())
            meta = json.loads((handle.metadata() or {}).get("distilled", "{}"))
            learned_lr = meta.get("learned_lr")
            repeats.append(DistilledRepeat(
                images=handle.get_tensor("images").numpy(),
                labels=handle.get_tensor("labels").numpy(),
                soft_labels=(handle.get_tensor("soft_labels").numpy()
                             if "soft_labels" in names else None),
                learned_lr=learned_lr))
    return repeats


def cell_is_current(directory: Path, digest: str) -> bool:
    """Whether `directory` holds a finished cell made from the same inputs (same digest): then
    a rerun keeps it instead of distilling it again."""
    record = read_cell_record(directory)
    return record is not None and record.get("inputs_digest") == digest


def save_trajectory(path: Path, trajectory: np.ndarray, metadata: dict[str, Any]) -> None:
    """One expert's trajectory as safetensors, with its architecture and digest as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"trajectory": torch.from_numpy(np.ascontiguousarray(trajectory, np.float32))},
              str(path), metadata={"expert": json.dumps(metadata, sort_keys=True)})


def load_trajectory(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """An expert's trajectory (epochs + 1) × P and its metadata."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get("expert", "{}"))
        return handle.get_tensor("trajectory").numpy(), metadata
