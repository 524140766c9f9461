"""The filter at scale: decisions from the per-shard scores alone, never from the images.

`select_from_scores` reads the scores files of the shards (`scores.py`) and applies exactly the
rules of the whole-set filter (`filters.filter_samples`): quality flags, CLIP score, judge
confidence (threshold and/or top fraction per class over *all* shards), margin, then greedy
near-duplicate removal within each class in confidence order. It keeps only small columns per
sample in memory (label, confidence, margin, prediction, flags: tens of bytes each); the
near-duplicate features of the samples still in the running are spilled to a temporary file
grouped by class, and each class is deduplicated from there in bounded tiles (`dedup.py`).
`write_manifest` then streams one JSON record per sample, with the fields of the whole-set filter.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from synthfactory.ops.curation.dedup import DedupStats, dedup_class
from synthfactory.ops.curation.filters import FilterSettings, confidence_keep, confidence_scores
from synthfactory.ops.curation.scores import (QUALITY_FLAGS, decode_quality, read_columns,
                                              read_scores_metadata)
from synthfactory.ops.seeds import derive_seed

# The reasons of the whole-set filter, as bits (quality flags first, in their order).
REASONS = (*[f"quality:{flag}" for flag in QUALITY_FLAGS], "test_near_duplicate", "low_clip_score",
           "low_confidence", "low_margin", "duplicate")
_BIT = {reason: np.uint16(1 << index) for index, reason in enumerate(REASONS)}
# Cluster size of the near-duplicate search (memory and speed only; decisions do not change).
CLUSTER_SIZE = 2048


@dataclass
class ScoredShard:
    """A synthetic shard and the scores file that describes it."""

    name: str  # the shard's tar name, `shard-00003.tar`
    scores_path: Path


@dataclass
class Selection:
    """Per-sample columns over all shards (in shard order) and the decisions."""

    shards: list[str]
    shard_index: np.ndarray  # int32: which of `shards` each sample is in
    keys: np.ndarray  # bytes
    labels: np.ndarray  # int64
    confidence: np.ndarray  # float32
    margin: np.ndarray  # float32
    predicted: np.ndarray  # int64
    quality: np.ndarray  # uint8 bits (zeros when the quality filter is off)
    clip_scores: np.ndarray | None
    reasons: np.ndarray  # uint16 bits of REASONS
    duplicate_of: np.ndarray  # int64 sample index, -1 for none
    dedup_stats: DedupStats = field(default_factory=DedupStats)
    # Near-copies of real test images: sample index → its test image and similarities.
    test_matches: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def keep(self) -> np.ndarray:
        """True for the samples no filter rejected."""
        return self.reasons == 0

    def key(self, index: int) -> str:
        """The key of sample `index`."""
        return self.keys[index].decode()

    def shard_keep_masks(self) -> Iterator[tuple[str, np.ndarray]]:
        """(shard name, uint8 keep mask in the shard's sample order) per shard."""
        keep = self.keep
        bounds = np.searchsorted(self.shard_index, np.arange(len(self.shards) + 1))
        for number, name in enumerate(self.shards):
            yield name, keep[bounds[number]:bounds[number + 1]].astype(np.uint8)


def _columns(shards: list[ScoredShard], clip: bool) -> dict[str, Any]:
    """The small per-sample columns of every shard (probabilities are reduced per shard)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (
        "shard_index", "keys", "labels", "confidence", "margin", "predicted", "quality",
        "clip_scores")}
    for number, shard in enumerate(shards):
        metadata = read_scores_metadata(shard.scores_path)
        wanted = ("labels", "probs", "quality") + (("clip_scores",) if clip else ())
        columns = read_columns(shard.scores_path, wanted)
        probs, labels = columns["probs"], columns["labels"]
        rows = np.arange(len(labels))
        confidence = confidence_scores(probs, labels)
        others = probs.copy()
        others[rows, labels] = -np.inf  # as filters.margin_scores
        parts["shard_index"].append(np.full(len(labels), number, np.int32))
        parts["keys"].append(np.array([key.encode() for key in metadata["keys"]]))
        parts["labels"].append(labels.astype(np.int64))
        parts["confidence"].append(confidence)
        parts["margin"].append(confidence - others.max(axis=1))
        parts["predicted"].append(probs.argmax(axis=1))
        parts["quality"].append(columns["quality"])
        if clip:
            parts["clip_scores"].append(columns["clip_scores"])
    if not shards:
        raise ValueError("no scored shard: materialize shard_scores first")
    return {name: (np.concatenate(values) if values else None) for name, values in parts.items()}


def select_from_scores(shards: list[ScoredShard], settings: FilterSettings, *, clip: bool,
                       seed: int, spill_dir: Path | None = None,
                       cluster_size: int = CLUSTER_SIZE,
                       test_copies: np.ndarray | None = None,
                       test_matches: dict[int, dict[str, Any]] | None = None) -> Selection:
    """Decide keep/reject for every sample of `shards` from their scores, as `filter_samples`.

    `clip` says the scores carry CLIP scores (a CLIP judge); `settings.clip_score` needs them.
    `spill_dir` holds the temporary class-grouped features (default: the system's temp dir).
    `test_copies` (bool, in shard order; `leakage.scan_shards`) marks the near-copies of real
    test images, needed only when `settings.drop_test_near_duplicates` is set; `test_matches`
    (sample index → test key and similarities) goes to their manifest records.
    """
    if settings.clip_score is not None and not clip:
        raise ValueError(f"filtered_set.clip_score {settings.clip_score} needs CLIP scores: set "
                         "judge.backend: clip")
    if settings.drop_test_near_duplicates and test_copies is None:
        raise ValueError("filtered_set.drop_test_near_duplicates needs the near-copies of the "
                         "test images (leakage.scan_shards)")
    columns = _columns(shards, clip)
    labels, confidence = columns["labels"], columns["confidence"]
    n = len(labels)
    quality = columns["quality"] if settings.quality else np.zeros(n, np.uint8)
    reasons = quality.astype(np.uint16)  # quality bits are the first bits of REASONS
    if settings.drop_test_near_duplicates and test_copies is not None:
        if len(test_copies) != n:
            raise ValueError(f"test_copies has {len(test_copies)} entries for {n} samples")
        # A leakage guard, not a quality choice: a copy of a test image is never kept.
        reasons[np.asarray(test_copies, bool)] |= _BIT["test_near_duplicate"]
    alive = reasons == 0
    clip_scores = columns["clip_scores"]
    if settings.clip_score is not None and clip_scores is not None:
        reasons[alive & (clip_scores < settings.clip_score)] |= _BIT["low_clip_score"]
        alive &= clip_scores >= settings.clip_score
    if settings.confidence:
        passed = confidence_keep(confidence, labels, threshold=settings.threshold,
                                 top_fraction=settings.top_fraction, eligible=alive)
        reasons[alive & ~passed] |= _BIT["low_confidence"]
        alive &= passed
    if settings.margin is not None:
        reasons[alive & (columns["margin"] < settings.margin)] |= _BIT["low_margin"]
        alive &= columns["margin"] >= settings.margin
    duplicate_of = np.full(n, -1, np.int64)
    stats = DedupStats()
    if settings.dedup:
        # Most confident first: the representative of a group is its best sample.
        order = np.flatnonzero(alive)[np.argsort(-confidence[alive], kind="stable")]
        walk = np.full(n, -1, np.int64)
        walk[order] = np.arange(len(order))
        with tempfile.TemporaryDirectory(prefix="dedup-spill-", dir=spill_dir) as directory:
            stats = _dedup_by_class(shards, columns["shard_index"], labels, alive, walk,
                                    settings.dedup_threshold, Path(directory), duplicate_of,
                                    seed=seed, cluster_size=cluster_size)
        reasons[duplicate_of >= 0] |= _BIT["duplicate"]
    return Selection(shards=[s.name for s in shards], shard_index=columns["shard_index"],
                     keys=columns["keys"], labels=labels, confidence=confidence,
                     margin=columns["margin"], predicted=columns["predicted"], quality=quality,
                     clip_scores=clip_scores, reasons=reasons, duplicate_of=duplicate_of,
                     dedup_stats=stats,
                     test_matches=(test_matches or {}) if settings.drop_test_near_duplicates
                     else {})


def _dedup_by_class(shards: list[ScoredShard], shard_index: np.ndarray, labels: np.ndarray,
                    alive: np.ndarray, walk: np.ndarray, threshold: float, directory: Path,
                    duplicate_of: np.ndarray, *, seed: int, cluster_size: int) -> DedupStats:
    """Spill the alive samples' dedup features grouped by class, then deduplicate class by class
    (filling `duplicate_of` with global sample indices)."""
    classes = np.unique(labels[alive])
    members = {int(label): np.flatnonzero(alive & (labels == label)) for label in classes}
    offsets, total = {}, 0
    for label in classes:
        offsets[int(label)] = total
        total += len(members[int(label)])
    spill = directory / "dedup.f32"
    bounds = np.searchsorted(shard_index, np.arange(len(shards) + 1))
    cursor = dict(offsets)
    width = 0
    with open(spill, "wb") as handle:
        for number, shard in enumerate(shards):
            rows = read_columns(shard.scores_path, ("dedup",))["dedup"].astype(np.float32)
            width = rows.shape[1]
            local = slice(bounds[number], bounds[number + 1])
            shard_alive, shard_labels = alive[local], labels[local]
            for label in np.unique(shard_labels[shard_alive]):
                chosen = rows[shard_alive & (shard_labels == label)]
                _write_rows(handle, cursor[int(label)], chosen)
                cursor[int(label)] += len(chosen)
    stats = DedupStats()
    row_bytes = width * 4
    with open(spill, "rb") as handle:
        for label in classes:
            indices = members[int(label)]

            def read(local: np.ndarray, start: int = offsets[int(label)]) -> np.ndarray:
                return _read_rows(handle, start, local, width, row_bytes)

            is_duplicate, group, class_stats = dedup_class(
                read, len(indices), walk[indices], threshold=threshold,
                cluster_size=cluster_size, seed=derive_seed(seed, "dedup", int(label)),
                spill_dir=directory)
            duplicate_of[indices[is_duplicate]] = indices[group[is_duplicate]]
            stats.merge(class_stats)
    return stats


def _write_rows(handle: IO[bytes], row: int, rows: np.ndarray) -> None:
    handle.seek(row * rows.shape[1] * 4)
    handle.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())


def _read_rows(handle: IO[bytes], start: int, local: np.ndarray, width: int,
               row_bytes: int) -> np.ndarray:
    """Rows `start + local` (sorted) of the spill, read run by run of consecutive rows."""
    out = np.empty((len(local), width), np.float32)
    if len(local) == 0:
        return out
    breaks = np.flatnonzero(np.diff(local) != 1) + 1
    position = 0
    for run in np.split(local, breaks):
        data = os.pread(handle.fileno(), len(run) * row_bytes, (start + int(run[0])) * row_bytes)
        out[position:position + len(run)] = np.frombuffer(data, np.float32).reshape(len(run), width)
        position += len(run)
    return out


def iter_records(selection: Selection, class_names: list[str]) -> Iterator[dict[str, Any]]:
    """One record per sample, with the fields of `filters.filter_samples` and its shard."""
    for index in range(len(selection.labels)):
        bits = int(selection.reasons[index])
        label = int(selection.labels[index])
        duplicate = int(selection.duplicate_of[index])
        record = {
            "key": selection.key(index), "label": label, "class_name": class_names[label],
            "confidence": round(float(selection.confidence[index]), 6),
            "margin": round(float(selection.margin[index]), 6),
            "predicted": int(selection.predicted[index]),
            "duplicate_of": selection.key(duplicate) if duplicate >= 0 else None,
            "quality_flags": decode_quality(int(selection.quality[index])),
            "keep": bits == 0, "reasons": [r for r in REASONS if bits & int(_BIT[r])],
            "shard": selection.shards[int(selection.shard_index[index])]}
        if selection.clip_scores is not None:
            record["clip_score"] = round(float(selection.clip_scores[index]), 6)
        if index in selection.test_matches:
            record["test_near_duplicate"] = selection.test_matches[index]
        yield record


def write_manifest(path: Path, selection: Selection, class_names: list[str]) -> None:
    """Stream the records as JSON lines (one sample at a time in memory)."""
    with open(path, "w") as handle:
        for record in iter_records(selection, class_names):
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def summarise_selection(selection: Selection, class_names: list[str],
                        settings: FilterSettings) -> dict[str, Any]:
    """The summary of `filters.summarise`, computed from the columns."""
    keep = selection.keep
    reason_counts = {reason: int(np.count_nonzero(selection.reasons & _BIT[reason]))
                     for reason in REASONS}
    per_class = {}
    for label, name in enumerate(class_names):
        members = selection.labels == label
        total, kept = int(members.sum()), int((keep & members).sum())
        # The mean of the rounded confidences, as the whole-set summary averages its records.
        rounded = [round(float(value), 6) for value in selection.confidence[members]]
        per_class[name] = {"total": total, "kept": kept,
                           "pass_rate": kept / total if total else 0.0,
                           "mean_confidence": float(np.mean(rounded)) if rounded else 0.0}
    n, kept_total = len(keep), int(keep.sum())
    return {"total": n, "kept": kept_total, "kept_fraction": kept_total / n if n else 0.0,
            "reasons": {r: c for r, c in sorted(reason_counts.items()) if c},
            "per_class": per_class, "settings": asdict(settings)}


def grid_picks(selection: Selection, per_class: int) -> dict[str, list[int]]:
    """Sample indices for the kept and rejected grids: the first `per_class` of each class."""
    picks: dict[str, list[int]] = {"kept": [], "rejected": []}
    for name, mask in (("kept", selection.keep), ("rejected", ~selection.keep)):
        for label in np.unique(selection.labels):
            picks[name] += np.flatnonzero(mask & (selection.labels == label))[:per_class].tolist()
    return {name: sorted(indices) for name, indices in picks.items()}


def write_keep_masks(path: Path, masks: Iterator[tuple[str, np.ndarray]]) -> None:
    """One uint8 keep mask per shard, as tensors named after the shards, in one safetensors file
    (a reader of one shard loads only that shard's mask)."""
    from safetensors.numpy import save_file

    tensors = {name: mask for name, mask in masks}
    save_file(tensors, str(path), metadata={"shards": json.dumps(sorted(tensors))})


def read_keep_masks(path: Path) -> dict[str, np.ndarray]:
    """The keep masks of a filtered set by shard name (1 = kept), as `write_keep_masks` wrote."""
    from safetensors.numpy import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize 'filtered_set' first")
    return load_file(str(path))
