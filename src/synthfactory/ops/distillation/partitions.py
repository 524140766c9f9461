"""The partitions of the distillation assets as the store holds them: which cell or expert an
entry of an asset's directory belongs to, what a partition's bytes depend on (the digests that
decide whether a finished one is kept)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.distillation.cells import parse_cell, parse_expert

CELLS = "cells"


def cell_of(entry: Path) -> str | None:
    """The cell a directory under `cells/` holds (None for anything else)."""
    try:
        return parse_cell(entry.name).key if entry.is_dir() else None
    except ValueError:
        return None


def expert_of(entry: Path) -> str | None:
    """The expert an entry of `expert_trajectories/` holds. The unpartitioned layout's
    `<source>/` directories and `trajectories.json` are no current expert's: they go."""
    if entry.is_dir() or entry.name == "trajectories.json":
        return entry.name
    if entry.suffix != ".safetensors":
        return None
    try:
        parse_expert(entry.stem)
    except ValueError:
        return None
    return entry.stem


def data_digest(data: Any) -> str:
    """A short sha256 of a source's images and labels (part of every partition's inputs)."""
    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def inputs_digest(value: Any) -> str:
    """A short, stable digest of a JSON-serialisable value (keys sorted): what a partition was
    made from. The same digest as `synthfactory.params.config_digest` (params import nothing
    from ops, and ops nothing from params)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expert_digest(data: Any, recipe: dict[str, Any], seed: int, index: int) -> str:
    """What one expert's bytes depend on: its source's data, the `recipe` (the
    expert_trajectories settings but the number of experts, DSA, architecture, width: adding
    experts keeps the finished ones), the seed and its index."""
    return inputs_digest({"data": data_digest(data), **recipe, "seed": seed, "index": index})
