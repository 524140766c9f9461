"""The training data of each evaluation arm, read from the directories the assets wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.curation import FILTER_KEEP, FILTER_MANIFEST
from synthfactory.ops.curation.selection import read_keep_masks
from synthfactory.ops.data.preflight import TooFewImages
from synthfactory.ops.data.real_images import read_training_images
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.storage.shards import finished_shards, load_arrays, read_samples
from synthfactory.ops.training.shardsets import ShardSet, shard_refs


@dataclass
class TrainingData:
    """Images (uint8 N×H×W×C), hard labels, training targets (hard, or N×K soft), and provenance."""

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    keys: list[str]
    sources: list[str]


def real_arm(real_dir: Path) -> TrainingData:
    """The real train split (or its few-shot subset)."""
    images, labels, keys = read_training_images(real_dir)
    return TrainingData(images, labels, labels, keys, sources=[real_dir.name])


def synthetic_arm(shards_dir: Path) -> TrainingData:
    """Every finished synthetic shard; `sources` names the shards used."""
    shards = finished_shards(shards_dir)
    if not shards:
        raise FileNotFoundError(f"{shards_dir} has no finished shards: materialize "
                                "'synthetic_shards' (all partitions or a range) first")
    images, labels, keys = load_arrays(shards)
    return TrainingData(images, labels, labels, keys, sources=[p.name for p in shards])


def read_filter_records(filtered_dir: Path) -> list[dict[str, Any]]:
    """The per-sample records of a filtered set (one per synthetic sample it scored)."""
    path = filtered_dir / FILTER_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize 'filtered_set' first")
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def filtered_arm(shards_dir: Path, filtered_dir: Path) -> TrainingData:
    """The synthetic samples the filtered set keeps (read from the shards it scored)."""
    records = read_filter_records(filtered_dir)
    kept = {r["key"] for r in records if r["keep"]}
    shard_names = sorted({r["shard"] for r in records})
    paths = [shards_dir / name for name in shard_names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"filtered_set refers to shards {missing} that are gone from "
                                f"{shards_dir}: re-materialize 'filtered_set'")
    samples = [s for s in read_samples(paths) if s.key in kept]
    if not samples:
        raise TooFewImages("the filtered set keeps no sample: loosen filtered_set thresholds")
    images = np.stack([s.image if s.image.ndim == 3 else s.image[:, :, None] for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    return TrainingData(images, labels, labels, [s.key for s in samples], sources=shard_names)


def distilled_arm(distilled_dir: Path) -> TrainingData:
    """The distilled images, with the judge's soft labels as targets when the set has them.

    A distilled set recorded as not built raises `TooFewImages` with its reason.
    """
    record = read_not_built(distilled_dir)
    if record is not None:
        raise TooFewImages(f"distilled_set was not built: {record['reason']}")
    shards = finished_shards(distilled_dir)
    if not shards:
        raise FileNotFoundError(f"{distilled_dir} has no finished shards: materialize "
                                "'distilled_set' first")
    samples = list(read_samples(shards))
    images = np.stack([s.image if s.image.ndim == 3 else s.image[:, :, None] for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    targets: np.ndarray = labels
    if all("soft_label" in s.meta for s in samples):
        targets = np.asarray([s.meta["soft_label"] for s in samples], dtype=np.float32)
    return TrainingData(images, labels, targets, [s.key for s in samples],
                        sources=[p.name for p in shards])


# The same arms as shard sets: what a classifier streams when the set is too large for memory
# (or trains under DDP), read without loading the images.


def synthetic_shard_set(shards_dir: Path, image_shape: tuple[int, int, int]) -> ShardSet:
    """Every finished synthetic shard."""
    paths = finished_shards(shards_dir)
    if not paths:
        raise FileNotFoundError(f"{shards_dir} has no finished shards: materialize "
                                "'synthetic_shards' (all partitions or a range) first")
    return ShardSet(shard_refs(paths), image_shape)


def filtered_shard_set(shards_dir: Path, filtered_dir: Path,
                    image_shape: tuple[int, int, int]) -> ShardSet:
    """The shards the filtered set scored, each with its keep mask."""
    masks = read_keep_masks(filtered_dir / FILTER_KEEP)
    paths = [shards_dir / name for name in sorted(masks)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"filtered_set refers to shards {missing} that are gone from "
                                f"{shards_dir}: re-materialize 'filtered_set'")
    shard_set = ShardSet(shard_refs(paths, masks), image_shape)
    if shard_set.n_samples == 0:
        raise TooFewImages("the filtered set keeps no sample: loosen filtered_set thresholds")
    return shard_set


def grid_samples(shards_dir: Path, filtered_dir: Path, per_class: int,
                 image_shape: tuple[int, int, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first `per_class` synthetic, kept and rejected images of each class, for grids.

    Streams the filtered set's manifest (one record at a time) to pick them, then reads only
    the shards that hold a picked sample: memory and reading stay bounded by the grids, not by
    the set.
    """
    path = filtered_dir / FILTER_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize 'filtered_set' first")
    picks: dict[str, list[tuple[str, str, int]]] = {"synthetic": [], "kept": [], "rejected": []}
    counts: dict[tuple[str, int], int] = {}
    with open(path) as handle:
        for line in handle:
            record = json.loads(line)
            for grid in ("synthetic", "kept" if record["keep"] else "rejected"):
                if counts.get((grid, record["label"]), 0) < per_class:
                    counts[(grid, record["label"])] = counts.get((grid, record["label"]), 0) + 1
                    picks[grid].append((record["shard"], record["key"], record["label"]))
    wanted = {key for chosen in picks.values() for _, key, _ in chosen}
    images: dict[str, np.ndarray] = {}
    for shard in sorted({shard for chosen in picks.values() for shard, _, _ in chosen}):
        for sample in read_samples([shards_dir / shard]):
            if sample.key in wanted:
                images[sample.key] = sample.image if sample.image.ndim == 3 else \
                    sample.image[:, :, None]
    empty = np.zeros((0, *image_shape), np.uint8)
    return {grid: (np.stack([images[key] for _, key, _ in chosen]) if chosen else empty,
                   np.asarray([label for _, _, label in chosen], dtype=np.int64))
            for grid, chosen in picks.items()}
