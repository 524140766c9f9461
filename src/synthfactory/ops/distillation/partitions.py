"""The partitions of the distillation assets as the store holds them: which cell or expert an
entry of an asset's directory belongs to, what a partition's bytes depend on (the digests that
decide whether a finished one is kept)."""

from __future__ import annotations

import hashlib
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
