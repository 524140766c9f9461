"""Per-shard scores: everything the filter decides from, computed once per synthetic shard.

`score_shard` runs the judge over one shard's images and returns, per sample, the judge's class
probabilities, its features (the embedding that herding, k-center and the report use), the
near-duplicate features (`filters.dedup_features`, so the per-shard filter and the whole-set
filter deduplicate in one space), the quality flags and, with a CLIP judge, the CLIP score of
the image against its own prompt. `write_scores` stores them as one safetensors file per shard
with the shard's sha256 and the judge's digest in its metadata; `scores_are_current` says whether
a stored file still describes the shard's bytes under the same judge (a rerun skips it then).

Only one shard's images are ever in memory, so scoring a set of any size is flat in memory and
spreads over GPUs as a backfill of the shard partitions, beside generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.curation.filters import dedup_features, quality_flags
from synthfactory.ops.storage.atomic import atomic_file
from synthfactory.ops.storage.shards import read_samples

# The bits of the `quality` column, in the order `filters.quality_flags` reports them.
QUALITY_FLAGS = ("constant", "blank")
# Bumped when the stored columns change meaning: older files are then not current.
# 2: `dedup` holds mean-removed thumbnails (it held the judge's features in 1).
SCORES_FORMAT = "2"
COLUMNS = ("labels", "probs", "embeddings", "dedup", "quality", "clip_scores")


@dataclass(frozen=True)
class ShardScores:
    """The scores of one shard's samples, in the shard's order."""

    keys: list[str]
    labels: np.ndarray  # int64 (N,)
    probs: np.ndarray  # float32 (N, K)
    embeddings: np.ndarray  # float32 (N, D): the judge's features
    dedup: np.ndarray  # float32 (N, D'): filters.dedup_features, the near-duplicate space
    quality: np.ndarray  # uint8 (N,): bit i set = QUALITY_FLAGS[i]
    clip_scores: np.ndarray | None = None  # float32 (N,): CLIP judge only


def scores_name(shard_name: str) -> str:
    """`shard-00003.tar` → `scores-00003.safetensors` (one scores file per shard partition)."""
    stem = shard_name.removesuffix(".tar")
    return f"scores-{stem.removeprefix('shard-')}.safetensors"


def encode_quality(flags: list[list[str]]) -> np.ndarray:
    """Per-sample flag lists → a uint8 bitmask column (unknown flag names are an error)."""
    column = np.zeros(len(flags), np.uint8)
    for index, found in enumerate(flags):
        for flag in found:
            if flag not in QUALITY_FLAGS:
                raise ValueError(f"quality flag {flag!r} has no bit: add it to QUALITY_FLAGS")
            column[index] |= 1 << QUALITY_FLAGS.index(flag)
    return column


def decode_quality(bits: int) -> list[str]:
    """A bitmask → the flag names, in QUALITY_FLAGS order."""
    return [flag for index, flag in enumerate(QUALITY_FLAGS) if bits & (1 << index)]


def score_shard(judge: Any, tar_path: Path, *, clip: bool) -> ShardScores:
    """Score one shard's samples with `judge` (a `judges.Judge`).

    With `clip`, probabilities are CLIP's zero-shot softmax over the class embeddings and each
    image is also scored against its own prompt text (read from the sample's JSON).
    """
    keys, labels, images, texts = [], [], [], []
    for sample in read_samples([tar_path]):
        keys.append(sample.key)
        labels.append(sample.label)
        images.append(sample.image if sample.image.ndim == 3 else sample.image[:, :, None])
        texts.append(sample.meta.get("prompt", {}).get("text", ""))
    if not keys:
        raise ValueError(f"{tar_path} holds no sample: re-materialize its synthetic_shards "
                         "partition")
    batch = np.stack(images)
    embeddings = np.ascontiguousarray(judge.embed(batch), dtype=np.float32)
    clip_scores = None
    if clip:
        probs = judge.zero_shot(embeddings)
        clip_scores = np.asarray(judge.prompt_scores(embeddings, texts), dtype=np.float32)
    else:
        probs = judge.predict_proba(batch)
    return ShardScores(
        keys=keys, labels=np.asarray(labels, dtype=np.int64),
        probs=np.ascontiguousarray(probs, dtype=np.float32), embeddings=embeddings,
        dedup=np.ascontiguousarray(dedup_features(batch, embeddings), dtype=np.float32),
        quality=encode_quality(quality_flags(batch)), clip_scores=clip_scores)


def write_scores(path: Path, scores: ShardScores, *, shard_sha256: str, judge_digest: str) -> None:
    """Publish one shard's scores atomically as safetensors (keys and provenance in metadata)."""
    from safetensors.numpy import save_file

    tensors = {"labels": scores.labels, "probs": scores.probs, "embeddings": scores.embeddings,
               "dedup": scores.dedup, "quality": scores.quality}
    if scores.clip_scores is not None:
        tensors["clip_scores"] = scores.clip_scores
    metadata = {"format": SCORES_FORMAT, "keys": json.dumps(scores.keys),
                "shard_sha256": shard_sha256, "judge_digest": judge_digest,
                "quality_flags": json.dumps(QUALITY_FLAGS)}
    with atomic_file(path) as temp:
        save_file({name: np.ascontiguousarray(value) for name, value in tensors.items()},
                  str(temp), metadata=metadata)


def read_scores_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a scores file (keys decoded), without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        metadata = dict(handle.metadata() or {})
        columns = set(handle.keys())
    if metadata.get("format") != SCORES_FORMAT:
        raise ValueError(f"{path} is not a shard_scores file of format {SCORES_FORMAT} "
                         f"(found {metadata.get('format')!r}): re-materialize shard_scores")
    metadata["keys"] = json.loads(metadata["keys"])
    metadata["columns"] = sorted(columns)
    return metadata


def read_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Some columns of a scores file (safetensors reads only those tensors' bytes)."""
    from safetensors import safe_open

    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown score columns {sorted(unknown)}; known: {COLUMNS}")
    with safe_open(str(path), framework="np") as handle:
        present = set(handle.keys())
        missing = set(columns) - present
        if missing:
            raise ValueError(f"{path} has no {sorted(missing)} column (a CLIP score needs "
                             "judge.backend: clip when shard_scores runs)")
        return {name: handle.get_tensor(name) for name in columns}


def scores_are_current(path: Path, *, shard_sha256: str, judge_digest: str) -> bool:
    """True when `path` holds scores of exactly these shard bytes under this judge."""
    from safetensors import SafetensorError

    if not path.is_file():
        return False
    try:
        metadata = read_scores_metadata(path)
    except (SafetensorError, ValueError, OSError):
        return False  # truncated, unreadable or of another format: score the shard again
    return (metadata.get("shard_sha256") == shard_sha256
            and metadata.get("judge_digest") == judge_digest)
