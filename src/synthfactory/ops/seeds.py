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
