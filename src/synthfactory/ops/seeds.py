"""Seeds derived from (global seed, asset, shard, index): independent, reproducible streams."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(global_seed: int, *parts: str | int) -> int:
    """A 63-bit seed from the global seed and a path of names/indices.

    Hashing (rather than adding offsets) keeps streams independent: the seed of image 7 in shard
    2 is unrelated to that of image 8, and changing one asset's parts never shifts another's.
    """
    text = "/".join(str(part) for part in (global_seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def rng(global_seed: int, *parts: str | int) -> np.random.Generator:
    """A numpy generator seeded by `derive_seed`."""
    return np.random.default_rng(derive_seed(global_seed, *parts))


def replicate_ids(replicates: int) -> list[str]:
    """The ids of `replicates` replicates: `r0` (the graph's own assets), `r1`, … (copies)."""
    if replicates < 1:
        raise ValueError(f"replicates {replicates} must be at least 1 (1: the graph alone)")
    return [f"r{index}" for index in range(replicates)]


def replicate_seed(global_seed: int, replicate: str) -> int:
    """The global seed a replicate's assets run with: the seed itself for `r0` (so one
    replicate is the run it always was), an independent derived seed for `r1`, `r2`, …"""
    if replicate == "r0":
        return global_seed
    if not (replicate.startswith("r") and replicate[1:].isdigit()):
        raise ValueError(f"replicate id {replicate!r} is not r<index> (r0, r1, …)")
    return derive_seed(global_seed, "replicate", int(replicate[1:]))
