"""The leakage rule: planted copies of test images are found, independent images are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthfactory.ops.curation.filters import FilterSettings, filter_samples
from synthfactory.ops.curation.leakage import (LeakageReference, copy_match, nearest_test,
                                               pixel_vectors, scan_shards, unit_rows)
from synthfactory.ops.curation.scores import ShardScores, write_scores
from synthfactory.ops.curation.selection import ScoredShard, iter_records, select_from_scores
from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.data.splits import stratified_split
from synthfactory.ops.storage.shards import Sample, write_shard

RULE = {"feature_threshold": 0.95, "pixel_threshold": 0.995}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real digits split into (independent images, test images), and a fixed random projection
    standing in for a judge's features (ReLU of a projection: nonnegative, like a ConvNet's)."""
    data = load_digits(8, 1)
    train, test = stratified_split(data.labels, 0.3, seed=0)
    return data.images[train], data.images[test], np.random.default_rng(0).normal(size=(64, 32))


def _features(images: np.ndarray, projection: np.ndarray) -> np.ndarray:
    return np.maximum(images.reshape(len(images), -1).astype(np.float64) @ projection, 0.0)


def test_planted_copies_are_all_found_and_independent_images_are_not(digits: tuple) -> None:
    """Exact copies, copies with ±8 grey levels of noise and copies rendered at 4x the size
    (then compared at low resolution) are every one flagged, with the right test image; 1258
    independent real digits are not (the rule's false-positive guard)."""
    independent, test, projection = digits
    picks = np.array([3, 77, 150, 301, 499])
    noise = np.random.default_rng(1).integers(-8, 9, test[picks].shape)
    noisy = np.clip(test[picks].astype(int) + noise, 0, 255).astype(np.uint8)
    large = test[picks].repeat(4, axis=1).repeat(4, axis=2)  # 32×32 copies
    queries = np.concatenate([independent, test[picks], noisy])
    found = nearest_test(_features(queries, projection), pixel_vectors(queries, 16),
                         _features(test, projection), pixel_vectors(test, 16), **RULE)
    planted = np.arange(len(independent), len(queries))
    assert np.flatnonzero(found.is_copy).tolist() == planted.tolist()
    assert found.copy_index[planted].tolist() == picks.tolist() * 2
    assert np.all(found.copy_index[: len(independent)] == -1)
    # Large renders are compared at ≤16 px: box-downsampled back to 8×8, they are copies too.
    large_found = nearest_test(_features(large[:, ::4, ::4], projection),
                               pixel_vectors(large, 8), _features(test, projection),
                               pixel_vectors(test, 8), **RULE)
    assert large_found.is_copy.all() and large_found.copy_index.tolist() == picks.tolist()


def test_both_spaces_must_agree(digits: tuple) -> None:
    """A degenerate feature space (every image maps to the same features) flags nothing on its
    own, and neither does pixel similarity when the features disagree."""
    independent, test, projection = digits
    same = np.ones((len(independent), 4))
    found = nearest_test(same, pixel_vectors(independent, 16), np.ones((len(test), 4)),
                         pixel_vectors(test, 16), **RULE)
    assert found.feature_similarity.min() == pytest.approx(1.0) and not found.is_copy.any()
    copies = test[:5]
    orthogonal = nearest_test(np.eye(8)[:5], pixel_vectors(copies, 16),
                              np.eye(8)[5:].repeat(len(test) // 3 + 1, axis=0)[: len(test)],
                              pixel_vectors(test, 16), **RULE)
    assert orthogonal.pixel_similarity.min() == pytest.approx(1.0)
    assert not orthogonal.is_copy.any()


def test_constant_images_correlate_with_nothing() -> None:
    blank = np.full((2, 8, 8, 1), 255, np.uint8)
    assert np.all(pixel_vectors(blank, 16) == 0.0)
    found = nearest_test(np.ones((2, 3)), pixel_vectors(blank, 16), np.ones((2, 3)),
                         pixel_vectors(blank, 16), **RULE)
    assert not found.is_copy.any()


def test_the_filter_drops_test_copies_only_when_asked() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.tile([0.5, 0.5], (4, 1))
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1), dtype=np.uint8)
    copies = np.array([False, True, False, False])
    args = (["a", "b", "c", "d"], labels, probs, np.eye(4), images)
    off = FilterSettings(threshold=None, dedup=False, quality=False)
    records, _ = filter_samples(*args, off, ["x", "y"], test_copies=copies)
    assert all(record["keep"] for record in records)
    on = FilterSettings(threshold=None, dedup=False, quality=False, drop_test_near_duplicates=True)
    records, summary = filter_samples(*args, on, ["x", "y"], test_copies=copies)
    assert [record["keep"] for record in records] == [True, False, True, True]
    assert records[1]["reasons"] == ["test_near_duplicate"]
    assert summary["reasons"] == {"test_near_duplicate": 1}
    with pytest.raises(ValueError, match="drop_test_near_duplicates needs"):
        filter_samples(*args, on, ["x", "y"])


def test_the_scores_path_finds_and_drops_planted_copies(digits: tuple, tmp_path: Path) -> None:
    """At scale the rule runs shard by shard, the judge's features taken from `shard_scores`:
    the same near-copies as `nearest_test` on the whole set, and `select_from_scores` drops
    exactly those (reason and matched test key in their records) only when asked."""
    independent, test, projection = digits
    queries = np.concatenate([independent[:60], test[[4, 40]]])  # two planted test images
    labels = np.arange(len(queries)) % 2
    shards = []
    for number, rows in enumerate(np.array_split(np.arange(len(queries)), 3)):
        tar = tmp_path / f"shard-{number:05d}.tar"
        info = write_shard(tar, (Sample(f"s{i:03d}", queries[i], int(labels[i])) for i in rows))
        features = _features(queries[rows], projection).astype(np.float32)
        scores = ShardScores(keys=[f"s{i:03d}" for i in rows], labels=labels[rows],
                             probs=np.full((len(rows), 2), 0.5, np.float32), embeddings=features,
                             dedup=features, quality=np.zeros(len(rows), np.uint8))
        path = tmp_path / f"scores-{number:05d}.safetensors"
        write_scores(path, scores, shard_sha256=info.sha256, judge_digest="j")
        shards.append(ScoredShard(tar.name, path))
    side = LeakageReference([f"t{i}" for i in range(len(test))], unit_rows(_features(test, projection)),
                    pixel_vectors(test, 16))
    scanned = scan_shards([(tmp_path / s.name, s.scores_path) for s in shards], side, None,
                          pixel_resolution=16, **RULE)
    whole = nearest_test(_features(queries, projection), pixel_vectors(queries, 16),
                         side.features, side.pixels, **RULE)
    assert np.flatnonzero(scanned.near.is_copy).tolist() == [60, 61]
    assert np.array_equal(scanned.near.copy_index, whole.copy_index)
    matches = {int(i): copy_match(scanned.near, int(i), side.keys) for i in [60, 61]}
    on = FilterSettings(threshold=None, dedup=False, quality=False, drop_test_near_duplicates=True)
    selection = select_from_scores(shards, on, clip=False, seed=0,
                                   test_copies=scanned.near.is_copy, test_matches=matches)
    records = list(iter_records(selection, ["x", "y"]))
    assert [r["key"] for r in records if not r["keep"]] == ["s060", "s061"]
    assert records[60]["reasons"] == ["test_near_duplicate"]
    assert records[61]["test_near_duplicate"]["test_key"] == "t40"
    off = FilterSettings(threshold=None, dedup=False, quality=False)
    assert select_from_scores(shards, off, clip=False, seed=0,
                              test_copies=scanned.near.is_copy).keep.all()
    with pytest.raises(ValueError, match="drop_test_near_duplicates needs"):
        select_from_scores(shards, on, clip=False, seed=0)
