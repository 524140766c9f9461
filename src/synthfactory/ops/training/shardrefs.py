"""The shards of a streamed set, one reference each: which tar, how many samples it
contributes (a keep mask per shard for a filtered set), and how the shards are dealt to the
streams of several loader workers and DDP ranks each epoch. No torch here: both `shardsets.py`
(loaded with the code location) and `sources.py` (the torch side) import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.shards import read_shard_info

# Streams further apart than this (in samples per epoch) read every shard by stride instead.
BALANCE_TOLERANCE = 0.10


@dataclass(frozen=True)
class ShardRef:
    """One shard of a streamed set: its tar, its sample count, and which samples it contributes
    (a uint8 mask in the shard's sample order; None = all)."""

    path: Path
    count: int
    keep: np.ndarray | None = field(default=None, compare=False)

    @property
    def used(self) -> int:
        """How many of its samples the set uses."""
        return self.count if self.keep is None else int(self.keep.sum())


def shard_refs(paths: list[Path], masks: dict[str, np.ndarray] | None = None) -> list[ShardRef]:
    """ShardRefs of finished shards (counts from their sidecars), with optional keep masks by
    shard name; a mask whose length differs from the shard's count is an error."""
    refs = []
    for path in paths:
        info = read_shard_info(path)
        if info is None:
            raise FileNotFoundError(f"{path} is not a finished shard (tar and sidecar)")
        mask = None if masks is None else masks.get(path.name)
        if masks is not None and mask is None:
            continue  # the filtered set did not score this shard
        if mask is not None and len(mask) != info.count:
            raise ValueError(f"keep mask of {path.name} has {len(mask)} entries, the shard has "
                             f"{info.count} samples: re-materialize 'filtered_set'")
        refs.append(ShardRef(path, info.count, mask))
    return refs


def deal(shards: list[ShardRef], streams: int, seed: int,
         epoch: int) -> list[list[tuple[int, int, int]]]:
    """Per stream, its (shard index, stride, offset) reads for one epoch (see the module doc)."""
    order = np.random.default_rng(derive_seed(seed, "shards", epoch)).permutation(len(shards))
    loads = np.zeros(streams, np.int64)
    plan: list[list[tuple[int, int, int]]] = [[] for _ in range(streams)]
    for index in order:
        target = int(np.argmin(loads))  # ties: the lowest stream
        plan[target].append((int(index), 1, 0))
        loads[target] += shards[index].used
    mean = loads.mean()
    if mean > 0 and (loads.max() - loads.min()) <= BALANCE_TOLERANCE * mean:
        return plan
    return [[(int(index), streams, stream) for index in order] for stream in range(streams)]
