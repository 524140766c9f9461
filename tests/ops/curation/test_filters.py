"""Each filter rejects what it should, nothing when switched off, and the summary adds up."""

from __future__ import annotations

import numpy as np
import pytest

from synthfactory.ops.curation.filters import (
    FilterSettings,
    confidence_keep,
    dedup_features,
    filter_samples,
    near_duplicates,
    quality_flags,
)
from synthfactory.ops.data.digits import load_digits

CLASSES = ["a", "b"]


def test_quality_flags_constant_and_blank_images_but_not_digits() -> None:
    constant = np.full((8, 8, 1), 77, np.uint8)
    blank = np.zeros((8, 8, 1), np.uint8)
    blank[0, 0] = 255  # one stray pixel is not a digit
    digits = load_digits(8, 1).images[:200]
    flags = quality_flags(np.stack([constant, blank]))
    assert flags == [["constant"], ["blank"]]
    assert all(found == [] for found in quality_flags(digits))


def test_confidence_threshold_and_top_fraction() -> None:
    scores = np.array([0.9, 0.2, 0.6, 0.1, 0.3, 0.8])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert confidence_keep(scores, labels, threshold=0.5, top_fraction=None).tolist() == [
        True, False, True, False, False, True]
    assert confidence_keep(scores, labels, threshold=None, top_fraction=0.34).tolist() == [
        True, False, False, False, False, True]
    assert confidence_keep(scores, labels, threshold=None, top_fraction=None).all()


def test_near_duplicates_group_to_the_first_in_order() -> None:
    features = np.array([[1.0, 0.0], [0.999, 0.01], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 0, 0, 1])
    duplicate, group = near_duplicates(features, labels, np.array([1, 0, 2, 3]), threshold=0.98)
    assert duplicate.tolist() == [True, False, False, False]  # 1 came first, 0 is its duplicate
    assert group.tolist() == [1, 1, 2, 3]  # same features in another class are not duplicates


def test_dedup_finds_planted_copies_and_leaves_distinct_digits() -> None:
    """In the dedup space a high cosine means a copy: an exact copy, a noisy one (σ 4 grey
    levels) and a brighter, flatter one are found; 60 distinct real 3s are all kept (in the
    judge's post-ReLU feature space distinct generated digits reach 0.989: benchmarks/dedup.py)."""
    data = load_digits(8, 1)
    threes = data.images[data.labels == 3][:60]
    noise = np.random.default_rng(0).normal(0, 4, threes[1].shape)
    copies = np.stack([threes[0], np.clip(np.round(threes[1] + noise), 0, 255).astype(np.uint8),
                       (threes[2] * 0.8 + 20).astype(np.uint8)])
    images = np.concatenate([threes, copies])
    labels = np.full(len(images), 3)
    duplicate, group = near_duplicates(dedup_features(images, np.zeros((len(images), 4))), labels,
                                       np.arange(len(images)),
                                       threshold=FilterSettings().dedup_threshold)
    assert np.flatnonzero(duplicate).tolist() == [60, 61, 62]
    assert group[60:].tolist() == [0, 1, 2]


def test_dedup_features_are_thumbnails_of_larger_images() -> None:
    generator = np.random.default_rng(1)
    for size in (48, 40):  # divisible by 16 (block means) and not (PIL box filter)
        smooth = np.kron(generator.integers(0, 255, (2, 4, 4, 3)), np.ones((1, 12, 12, 1)))
        images = np.clip(smooth[:, :size, :size], 0, 255).astype(np.uint8)
        features = dedup_features(images, np.zeros((2, 4)))
        assert features.shape == (2, 16 * 16 * 3)
        assert np.allclose(features.mean(axis=1), 0, atol=1e-3)  # brightness does not count
        copy = np.clip(images[0] + generator.normal(0, 3, images[0].shape), 0, 255)
        both = np.stack([images[0], copy.astype(np.uint8), images[1]])
        duplicate, _ = near_duplicates(dedup_features(both, np.zeros((3, 4))), np.zeros(3, int),
                                       np.arange(3), threshold=0.99)
        assert duplicate.tolist() == [False, True, False]


def _inputs() -> tuple:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 255, (6, 8, 8, 1), dtype=np.uint8)
    images[5] = 0  # constant
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.2, 0.8], [0.1, 0.9]])
    features = generator.normal(size=(6, 4))  # judge features: no say in what a copy is
    images[1] = (images[0] * 0.8 + 20).astype(np.uint8)  # sample 0, less contrast: a copy
    images[2] = images[0]  # identical, but low confidence: rejected before dedup
    return ["k0", "k1", "k2", "k3", "k4", "k5"], labels, probs, features, images


def test_filters_combine_with_counted_reasons() -> None:
    keys, labels, probs, features, images = _inputs()
    records, summary = filter_samples(keys, labels, probs, features, images, FilterSettings(),
                                      CLASSES)
    by_key = {r["key"]: r for r in records}
    assert by_key["k5"]["reasons"] == ["quality:constant"]
    assert by_key["k2"]["reasons"] == ["low_confidence"]
    assert by_key["k1"]["reasons"] == ["duplicate"] and by_key["k1"]["duplicate_of"] == "k0"
    assert [r["key"] for r in records if r["keep"]] == ["k0", "k3", "k4"]
    assert summary["kept"] == 3 and summary["total"] == 6
    assert summary["reasons"] == {"duplicate": 1, "low_confidence": 1, "quality:constant": 1}
    # Mean judge probability of the prompt class over all of a class's samples (kept or not):
    # class a is samples 0-2 with p(a) = 0.9, 0.8, 0.3; class b samples 3-5 with p(b) 0.9, 0.8, 0.9.
    assert summary["per_class"]["a"] == {"total": 3, "kept": 1, "pass_rate": 1 / 3,
                                         "mean_confidence": pytest.approx(2 / 3)}
    assert summary["per_class"]["b"]["mean_confidence"] == pytest.approx(2.6 / 3)
    assert by_key["k2"]["margin"] < 0 < by_key["k0"]["margin"]


def test_switched_off_filters_reject_nothing() -> None:
    keys, labels, probs, features, images = _inputs()
    settings = FilterSettings(confidence=False, dedup=False, quality=False)
    records, summary = filter_samples(keys, labels, probs, features, images, settings, CLASSES)
    assert all(r["keep"] for r in records) and summary["reasons"] == {}
    assert summary["settings"]["dedup"] is False


def test_a_class_with_nothing_kept_is_reported_with_pass_rate_zero() -> None:
    keys, labels, probs, features, images = _inputs()
    records, summary = filter_samples(keys, labels, probs, features, images,
                                      FilterSettings(threshold=0.95), CLASSES)
    assert summary["per_class"]["a"]["pass_rate"] == 0.0
    assert summary["kept"] == 0


def test_margin_keeps_only_clear_wins_of_the_prompt_class() -> None:
    # Three classes; the prompt class is 0 for every sample.
    probs = np.array([[0.8, 0.1, 0.1], [0.45, 0.4, 0.15], [0.3, 0.6, 0.1], [0.5, 0.25, 0.25]])
    labels = np.zeros(4, dtype=np.int64)
    images = load_digits(8, 1).images[:4]
    settings = FilterSettings(threshold=None, margin=0.2, dedup=False)
    records, summary = filter_samples([f"k{i}" for i in range(4)], labels, probs,
                                      np.eye(4), images, settings, ["a", "b", "c"])
    assert [r["keep"] for r in records] == [True, False, False, True]
    assert [r["margin"] for r in records] == [0.7, 0.05, -0.3, 0.25]
    assert records[2]["reasons"] == ["low_margin"]
    assert summary["reasons"] == {"low_margin": 2}


def test_clip_score_rejects_images_unlike_their_prompt_and_is_recorded() -> None:
    probs = np.tile([0.9, 0.1], (3, 1))
    labels = np.zeros(3, dtype=np.int64)
    images = load_digits(8, 1).images[:3]
    settings = FilterSettings(threshold=None, clip_score=0.25, dedup=False)
    records, summary = filter_samples(["x", "y", "z"], labels, probs, np.eye(3), images,
                                      settings, CLASSES, clip_scores=np.array([0.31, 0.2, 0.25]))
    assert [r["keep"] for r in records] == [True, False, True]
    assert [r["clip_score"] for r in records] == [0.31, 0.2, 0.25]
    assert records[1]["reasons"] == ["low_clip_score"] and summary["kept"] == 2


def test_clip_score_without_clip_scores_names_the_fix() -> None:
    images = load_digits(8, 1).images[:2]
    with pytest.raises(ValueError, match="set judge.backend: clip"):
        filter_samples(["x", "y"], np.zeros(2, np.int64), np.tile([0.9, 0.1], (2, 1)),
                       np.eye(2), images, FilterSettings(clip_score=0.2), CLASSES)
