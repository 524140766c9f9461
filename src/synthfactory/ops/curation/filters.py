"""The filters of the filtered set: quality flags, CLIP score, judge confidence and margin,
near-duplicates.

Each filter can be switched off; a switched-off filter rejects nothing. They apply in order —
quality and near-copies of real test images (off by default; see `leakage.py`), CLIP score
(image–prompt similarity, CLIP judge only), confidence, margin, then de-duplication among the
samples still kept — so a rejected sample is never chosen as the representative of a duplicate
group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

# A uint8 image whose pixel standard deviation is below one grey level carries no content.
CONSTANT_STD = 1.0
# A "blank" image has almost no ink: fewer than this fraction of pixels differ from its most
# common value by more than a quarter of the range (a digit's stroke covers far more).
BLANK_INK_FRACTION = 0.02
# Near-duplicates are compared as thumbnails of at most this many pixels a side: fine detail
# does not make two images distinct copies, and the features stay small (16·16·3 floats at most).
DEDUP_SIZE = 16


@dataclass(frozen=True)
class FilterSettings:
    """Switches and thresholds of the filters (mirrors `params.yaml: filtered_set`)."""

    confidence: bool = True
    threshold: float | None = 0.5
    top_fraction: float | None = None
    margin: float | None = None
    clip_score: float | None = None
    dedup: bool = True
    dedup_threshold: float = 0.99
    quality: bool = True
    drop_test_near_duplicates: bool = False


def quality_flags(images: np.ndarray) -> list[list[str]]:
    """Per image: `constant` (no variation) and/or `blank` (almost no ink).

    Images are uint8, so NaN cannot occur here; non-finite generator outputs are caught where
    images are generated.
    """
    flat = images.reshape(len(images), -1).astype(np.float32)
    flags: list[list[str]] = []
    for pixels in flat:
        found = []
        if pixels.std() < CONSTANT_STD:
            found.append("constant")
        else:
            values, counts = np.unique(pixels, return_counts=True)
            background = values[counts.argmax()]
            ink = np.mean(np.abs(pixels - background) > 64)
            if ink < BLANK_INK_FRACTION:
                found.append("blank")
        flags.append(found)
    return flags


def confidence_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The judge's probability of each sample's prompt class."""
    return probs[np.arange(len(labels)), labels]


def margin_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability of the prompt class minus the best other class (negative: judged otherwise)."""
    own = confidence_scores(probs, labels)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return own - others.max(axis=1)


def confidence_keep(scores: np.ndarray, labels: np.ndarray, *, threshold: float | None,
                    top_fraction: float | None, eligible: np.ndarray | None = None) -> np.ndarray:
    """Keep score ≥ threshold and/or the top fraction of each class (at least one per class).

    `eligible` restricts the top fraction to samples still in the running.
    """
    eligible = np.ones(len(scores), bool) if eligible is None else eligible
    keep = eligible.copy()
    if threshold is not None:
        keep &= scores >= threshold
    if top_fraction is not None:
        in_top = np.zeros(len(scores), bool)
        for label in np.unique(labels):
            members = np.flatnonzero((labels == label) & eligible)
            if len(members) == 0:
                continue
            count = max(1, int(round(len(members) * top_fraction)))
            # Stable sort on -score: ties keep generation order, so the result is deterministic.
            best = members[np.argsort(-scores[members], kind="stable")[:count]]
            in_top[best] = True
        keep &= in_top
    return keep


def dedup_features(images: np.ndarray, judge_features: np.ndarray) -> np.ndarray:
    """The space in which near-duplicates are found (cosine similarity), one row per image.

    Every caller that deduplicates (the whole-set filter, per-shard scoring) gets its features
    here, so that they agree on what a copy is. A copy is a matter of pixels, not of meaning:
    each image becomes its thumbnail (area-averaged to at most `DEDUP_SIZE` pixels a side,
    channels kept, as perceptual hashes do) minus its own mean, so the cosine of two rows is the
    Pearson correlation of their thumbnails: 1 for an exact copy or one that differs only in
    brightness or contrast, ≥ 0.993 for a copy with noise of 8 grey levels on 8×8 digits.
    Judge (classifier) features were used before: post-ReLU ConvNet features put distinct
    images of one class at a median cosine of 0.87, so "duplicates" at 0.98 differed by 13-21
    grey levels on average (`benchmarks/dedup.py` measures both spaces). Constant images have
    no direction (a zero row) and are never anyone's duplicate; the quality filter flags them.
    """
    del judge_features  # what a copy is does not depend on the judge
    return thumbnail_features(images, DEDUP_SIZE)


def thumbnail_features(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 N×H×W×C → float32 N×(h·w·C): thumbnails of at most `size` a side, mean removed."""
    height, width = images.shape[1:3]
    if height > size or width > size:
        if height % size == 0 and width % size == 0:  # exact area average by blocks
            images = images.reshape(len(images), size, height // size, size, width // size,
                                    images.shape[3]).mean(axis=(2, 4))
        else:
            images = np.stack([
                np.stack([np.asarray(Image.fromarray(image[:, :, channel]).resize(
                    (size, size), Image.Resampling.BOX), dtype=np.float32)
                    for channel in range(image.shape[2])], axis=-1) for image in images])
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat - flat.mean(axis=1, keepdims=True)


def near_duplicates(features: np.ndarray, labels: np.ndarray, order: np.ndarray, *,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy de-duplication within each class by cosine similarity.

    Walking samples in `order`, a sample at cosine similarity ≥ `threshold` to an earlier kept
    sample of its class is a duplicate of it. Returns (is_duplicate, group), where group is the
    index of the representative (a representative's group is itself). Samples not in `order`
    are neither duplicates nor representatives (group −1).
    """
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, 1e-12)
    is_duplicate = np.zeros(len(features), bool)
    group = np.full(len(features), -1, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    for label in np.unique(labels[order]):
        members = order[labels[order] == label]
        similarity = unit[members] @ unit[members].T
        representatives: list[int] = []
        for position, index in enumerate(members):
            if representatives:
                best = int(np.argmax(similarity[position, representatives]))
                if similarity[position, representatives[best]] >= threshold:
                    is_duplicate[index] = True
                    group[index] = members[representatives[best]]
                    continue
            representatives.append(position)
            group[index] = index
    return is_duplicate, group


def filter_samples(keys: list[str], labels: np.ndarray, probs: np.ndarray, features: np.ndarray,
                   images: np.ndarray, settings: FilterSettings, class_names: list[str],
                   clip_scores: np.ndarray | None = None,
                   test_copies: np.ndarray | None = None) -> tuple[list[dict], dict]:
    """Score every sample, decide keep/reject with reasons, and summarise per class.

    `probs` are the judge's class probabilities (a trained classifier's softmax, or CLIP's
    zero-shot softmax over the class prompts); `clip_scores` the cosine similarity of each image
    to its own prompt, needed only when `settings.clip_score` is set; `test_copies` marks the
    near-copies of real test images (`leakage.nearest_test`), needed only when
    `settings.drop_test_near_duplicates` is set.
    """
    n = len(keys)
    if settings.clip_score is not None and clip_scores is None:
        raise ValueError(f"filtered_set.clip_score {settings.clip_score} needs CLIP scores: set "
                         "judge.backend: clip")
    if settings.drop_test_near_duplicates and test_copies is None:
        raise ValueError("filtered_set.drop_test_near_duplicates needs the near-copies of the "
                         "test images (leakage.nearest_test)")
    confidence = confidence_scores(probs, labels)
    margin = margin_scores(probs, labels)
    flags = quality_flags(images) if settings.quality else [[] for _ in range(n)]
    reasons: list[list[str]] = [[f"quality:{flag}" for flag in found] for found in flags]
    if settings.drop_test_near_duplicates and test_copies is not None:
        # A leakage guard, not a quality choice: a copy of a test image is never kept.
        for index in np.flatnonzero(test_copies):
            reasons[index].append("test_near_duplicate")
    alive = np.array([not r for r in reasons])
    if settings.clip_score is not None and clip_scores is not None:
        for index in np.flatnonzero(alive & (clip_scores < settings.clip_score)):
            reasons[index].append("low_clip_score")
        alive &= clip_scores >= settings.clip_score
    if settings.confidence:
        passed = confidence_keep(confidence, labels, threshold=settings.threshold,
                                 top_fraction=settings.top_fraction, eligible=alive)
        for index in np.flatnonzero(alive & ~passed):
            reasons[index].append("low_confidence")
        alive &= passed
    if settings.margin is not None:
        # The prompt's class must win over every other class by at least this much.
        for index in np.flatnonzero(alive & (margin < settings.margin)):
            reasons[index].append("low_margin")
        alive &= margin >= settings.margin
    duplicate_of: list[str | None] = [None] * n
    if settings.dedup:
        # Most confident first: the representative of a group is its best sample.
        order = np.flatnonzero(alive)[np.argsort(-confidence[alive], kind="stable")]
        is_duplicate, group = near_duplicates(dedup_features(images, features), labels, order,
                                              threshold=settings.dedup_threshold)
        for index in np.flatnonzero(is_duplicate):
            reasons[index].append("duplicate")
            duplicate_of[index] = keys[group[index]]
    records = [{"key": keys[i], "label": int(labels[i]), "class_name": class_names[labels[i]],
                "confidence": round(float(confidence[i]), 6),
                "margin": round(float(margin[i]), 6), "predicted": int(probs[i].argmax()),
                "duplicate_of": duplicate_of[i], "quality_flags": flags[i],
                **({} if clip_scores is None else {"clip_score": round(float(clip_scores[i]), 6)}),
                "keep": not reasons[i], "reasons": reasons[i]} for i in range(n)]
    return records, summarise(records, class_names, settings)


def summarise(records: list[dict], class_names: list[str], settings: FilterSettings) -> dict:
    """Kept/total overall and per class, pass rates, mean confidence, and reason counts."""
    reason_counts: dict[str, int] = {}
    for record in records:
        for reason in record["reasons"]:
            reason_counts[reason] = reason_counts.get(reason, 0) + 1
    per_class = {}
    for label, name in enumerate(class_names):
        members = [r for r in records if r["label"] == label]
        kept = sum(r["keep"] for r in members)
        per_class[name] = {
            "total": len(members), "kept": kept,
            "pass_rate": kept / len(members) if members else 0.0,
            "mean_confidence": (float(np.mean([r["confidence"] for r in members]))
                                if members else 0.0)}
    kept_total = sum(r["keep"] for r in records)
    return {"total": len(records), "kept": kept_total,
            "kept_fraction": kept_total / len(records) if records else 0.0,
            "reasons": dict(sorted(reason_counts.items())), "per_class": per_class,
            "settings": asdict(settings)}
