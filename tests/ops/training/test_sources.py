"""Streamed training data: every kept sample once per epoch, each rank its own share, the same
batches for the same seed, and a fast tar reader that refuses damaged shards."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.storage.shards import Sample, read_samples, write_shard
from synthfactory.ops.storage.tarstream import TarFormatError, iter_members
from synthfactory.ops.training.shardrefs import deal, shard_refs
from synthfactory.ops.training.shardsets import ShardSet
from synthfactory.ops.training.sources import InMemorySource, ShardSource, ShardStream

CPU = torch.device("cpu")


def _shards(root: Path, sizes: list[int]) -> list[Path]:
    """Shards of the given sizes; sample i's image is filled with i % 251, its label i % 10."""
    paths, index = [], 0
    for number, size in enumerate(sizes):
        samples = []
        for _ in range(size):
            samples.append(Sample(f"k{index:05d}", np.full((4, 4, 1), index % 251, np.uint8),
                                  index % 10))
            index += 1
        path = root / f"shard-{number:05d}.tar"
        write_shard(path, samples)
        paths.append(path)
    return paths


def _epoch(stream: ShardStream) -> list[int]:
    """The image values of one epoch of a stream (one worker)."""
    return [int(image[0, 0, 0]) for image, _ in stream]


@pytest.mark.parametrize("sizes", [[20] * 8, [50, 5, 5, 5], [20, 20]])
def test_every_kept_sample_once_per_epoch_over_ranks_and_workers(tmp_path: Path,
                                                                  sizes: list[int]) -> None:
    """Balanced shards are dealt whole; unbalanced or too few ones are read by stride. Either
    way the streams of 2 ranks × 2 workers cover the kept samples exactly once."""
    paths = _shards(tmp_path, sizes)
    masks = {path.name: (np.arange(size) % 3 != 0).astype(np.uint8)
             for path, size in zip(paths, sizes, strict=True)}
    refs = shard_refs(paths, masks)
    seen = []
    for rank in range(2):
        for worker in range(2):
            stream = ShardStream(refs, seed=7, rank=rank, world_size=2, workers=2,
                                 shuffle_buffer=16, soft=False, epochs=1)
            reads = deal(refs, 4, 7, 0)[rank * 2 + worker]
            seen += [int(s["__key__"][1:]) for s in stream._samples(reads)]
    kept = [int(sample.key[1:]) for path in paths for position, sample in
            enumerate(read_samples([path], decode=False)) if masks[path.name][position]]
    assert sorted(seen) == sorted(kept) and len(seen) == len(kept)


def test_a_rank_reads_only_its_share_and_shares_are_balanced(tmp_path: Path) -> None:
    refs = shard_refs(_shards(tmp_path, [10] * 8))
    plans = deal(refs, 2, seed=0, epoch=0)
    assert all(stride == 1 for plan in plans for _, stride, _ in plan)  # whole shards
    assert sorted(i for plan in plans for i, _, _ in plan) == list(range(8))
    assert [len(plan) for plan in plans] == [4, 4]
    assert deal(refs, 2, seed=0, epoch=1) != plans  # a new deal each epoch


def test_streamed_batches_are_the_same_for_a_seed_and_shuffled(tmp_path: Path) -> None:
    shard_set = ShardSet(shard_refs(_shards(tmp_path, [30] * 4)), (4, 4, 1))

    def first_batches(seed: int, workers: int) -> list[list[int]]:
        source = shard_set.source(in_memory_mb=0, seed=seed, workers=workers,
                                  shuffle_buffer=50)
        batches = source.batches(16, torch.Generator(), CPU)
        values = [(images[:, 0, 0, 0].add(1).mul(127.5).round().int().tolist())
                  for images, _ in itertools.islice(batches, 12)]  # 1.6 epochs
        batches.close()
        return values

    first = first_batches(seed=1, workers=2)
    assert first == first_batches(seed=1, workers=2)
    assert first != first_batches(seed=2, workers=2)
    epoch = sorted(v for batch in first[:7] for v in batch)[:100]
    assert epoch != sorted(epoch, key=lambda v: -v) and first[0] != sorted(first[0])  # shuffled
    assert len(set(v for batch in first for v in batch)) == 120  # every sample shows up


def test_large_sets_stream_and_small_ones_load(tmp_path: Path) -> None:
    shard_set = ShardSet(shard_refs(_shards(tmp_path, [10, 10])), (4, 4, 1))
    assert isinstance(shard_set.source(in_memory_mb=1.0, seed=0), InMemorySource)
    assert isinstance(shard_set.source(in_memory_mb=0.0, seed=0), ShardSource)
    assert isinstance(shard_set.source(in_memory_mb=1.0, seed=0, world_size=2), ShardSource)
    images, labels, keys = shard_set.arrays()
    assert images.shape == (20, 4, 4, 1) and keys[0] == "k00000" and labels[3] == 3


def test_the_tar_reader_reads_what_write_shard_wrote_and_refuses_damage(tmp_path: Path) -> None:
    (path,) = _shards(tmp_path, [5])
    members = list(iter_members(path))
    assert [name for name, _ in members][:3] == ["k00000.png", "k00000.json", "k00000.cls"]
    assert members[2][1] == b"0" and len(members) == 15
    damaged = tmp_path / "damaged.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF  # inside the first member's data: the tar header after it is intact…
    data[1030] ^= 0xFF  # …but this flips a byte of the second header
    damaged.write_bytes(bytes(data))
    with pytest.raises(TarFormatError, match="damaged tar header"):
        list(iter_members(damaged))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(path.read_bytes()[:520])  # inside the first member's data
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_members(truncated))
