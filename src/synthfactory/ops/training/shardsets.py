"""The shards of a training set, described without reading them: which shards (`shardrefs.py`),
their image shape and label kind, and whether the set is read into memory or streamed. No
torch here: the asset modules import it when the code location loads; `sources.py` turns a
`ShardSet` into batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synthfactory.ops.data.real_images import MANIFEST_JSON, read_image_shape
from synthfactory.ops.storage.shards import finished_shards, read_samples, read_shard_info
from synthfactory.ops.training.shardrefs import ShardRef, shard_refs

if TYPE_CHECKING:  # annotations only: sources.py imports torch
    from synthfactory.ops.training.sources import InMemorySource, ShardSource

@dataclass(frozen=True)
class ShardSet:
    """The shards of one training set, before deciding how to read them."""

    shards: list[ShardRef]
    image_shape: tuple[int, int, int]  # H, W, C
    soft: bool = False
    n_targets: int | None = None

    @property
    def n_samples(self) -> int:
        """Samples the set uses."""
        return sum(shard.used for shard in self.shards)

    @property
    def decoded_mib(self) -> float:
        """Size of the set's decoded uint8 images in MiB (float tensors take 4× that)."""
        height, width, channels = self.image_shape
        return self.n_samples * height * width * channels / 2**20

    def arrays(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every used sample in shard order: uint8 N×H×W×C images, targets (labels, or N×K soft
        labels), keys. The whole set in memory: for sets under `runtime.in_memory_mb`."""
        images, targets, keys = [], [], []
        for shard in self.shards:
            for position, sample in enumerate(read_samples([shard.path])):
                if shard.keep is not None and not shard.keep[position]:
                    continue
                images.append(sample.image if sample.image.ndim == 3 else sample.image[:, :, None])
                targets.append(sample.meta["soft_label"] if self.soft else sample.label)
                keys.append(sample.key)
        if not images:
            raise ValueError("cannot train a classifier on an empty set")
        return (np.stack(images), np.asarray(targets, np.float32 if self.soft else np.int64),
                keys)

    def labels(self) -> np.ndarray:
        """The hard label of every used sample in shard order, read without decoding an image
        (a scan of the tars: checks such as "has every class" before any training)."""
        labels = []
        for shard in self.shards:
            for position, sample in enumerate(read_samples([shard.path], decode=False)):
                if shard.keep is None or shard.keep[position]:
                    labels.append(sample.label)
        return np.asarray(labels, np.int64)

    def source(self, *, in_memory_mb: float, seed: int, rank: int = 0, world_size: int = 1,
               workers: int = 2, shuffle_buffer: int = 5000) -> InMemorySource | ShardSource:
        """Arrays in memory when the decoded set is at most `in_memory_mb` MiB on one process;
        otherwise (or under DDP) the shards streamed through `workers` loader processes."""
        # deferred: sources.py imports torch, and this module loads with the code location
        from synthfactory.ops.training.sources import InMemorySource, ShardSource

        if world_size == 1 and self.decoded_mib <= in_memory_mb:
            images, targets, _ = self.arrays()
            return InMemorySource(images, targets)
        return ShardSource(self.shards, image_shape=self.image_shape, soft=self.soft,
                           n_targets=self.n_targets, seed=seed, rank=rank, world_size=world_size,
                           workers=workers, shuffle_buffer=shuffle_buffer)


def real_shard_set(real_dir: Path) -> ShardSet:
    """The real train split's shards (with the few-shot subset as keep masks, if any)."""
    paths = finished_shards(real_dir, "train-*.tar")
    if not paths:
        raise FileNotFoundError(f"{real_dir} has no finished train shards: materialize "
                                "'real_images' first")
    few_shot = json.loads((real_dir / MANIFEST_JSON).read_text()).get("few_shot_keys")
    masks = None
    if few_shot is not None:
        wanted = set(few_shot)
        masks = {path.name: np.array([key in wanted for key in read_shard_info(path).keys],
                                     np.uint8) for path in paths}
    return ShardSet(shard_refs(paths, masks), read_image_shape(real_dir))
