"""The filter at scale: per-shard scores, and decisions from them that equal the whole-set filter.

The reference is `filters.filter_samples` on the whole set (images, probabilities and features
of every sample at once). The per-shard path scores each shard on its own, stores the scores as
safetensors, and decides from those files only; every record (kept keys, reasons, duplicate
groups, scores) and the summary must be the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.curation import JUDGE_WEIGHTS
from synthfactory.ops.curation.dedup import dedup_class
from synthfactory.ops.curation.filters import FilterSettings, filter_samples, near_duplicates
from synthfactory.ops.curation.judges import ConvNetJudge
from synthfactory.ops.curation.scores import (read_columns, read_scores_metadata, score_shard,
                                              scores_are_current, write_scores)
from synthfactory.ops.curation.selection import (ScoredShard, iter_records, select_from_scores,
                                                 summarise_selection)
from synthfactory.ops.data.digits import DIGIT_NAMES, load_digits
from synthfactory.ops.storage.shards import Sample, load_arrays, write_shard
from synthfactory.ops.training.train import ClassifierSettings, save_classifier, train_classifier

CPU = torch.device("cpu")
N_SHARDS = 6


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Digits written as 6 shards (with copies, so that dedup has work), a small trained judge,
    and every shard scored into its own safetensors file."""
    root = tmp_path_factory.mktemp("scale")
    digits = load_digits(8, 1)
    images, labels = digits.images[:600].copy(), digits.labels[:600].copy()
    images[::7] = images[1::7][: len(images[::7])]  # exact copies of other samples
    labels[::7] = labels[1::7][: len(labels[::7])]
    images[5] = 0  # a blank image: a quality flag
    model, _ = train_classifier(digits.images[1000:], digits.labels[1000:], 10,
                                ClassifierSettings(epochs=1, min_steps=100, width=16), seed=0,
                                device=CPU)
    judge_dir = root / "judge"
    judge_dir.mkdir()
    save_classifier(judge_dir / JUDGE_WEIGHTS, model)
    judge = ConvNetJudge(judge_dir, CPU)
    shards = []
    for number, start in enumerate(range(0, len(images), len(images) // N_SHARDS)):
        tar = root / "shards" / f"shard-{number:05d}.tar"
        info = write_shard(tar, (Sample(f"s{i:05d}", images[i], int(labels[i]))
                                 for i in range(start, start + len(images) // N_SHARDS)))
        path = root / "scores" / f"scores-{number:05d}.safetensors"
        path.parent.mkdir(exist_ok=True)
        write_scores(path, score_shard(judge, tar, clip=False), shard_sha256=info.sha256,
                     judge_digest="judge-a")
        shards.append(ScoredShard(tar.name, path))
    all_images, all_labels, keys = load_arrays([root / "shards" / s.name for s in shards])
    return {"shards": shards, "images": all_images, "labels": all_labels, "keys": keys,
            "probs": judge.predict_proba(all_images), "features": judge.embed(all_images),
            "root": root}


SETTINGS = {
    "default": FilterSettings(threshold=0.2),  # params.yaml's filtered_set
    "top_fraction": FilterSettings(threshold=None, top_fraction=0.6, dedup_threshold=0.9),
    "threshold_and_margin": FilterSettings(threshold=0.3, margin=0.1, dedup_threshold=0.95),
    "dedup_only": FilterSettings(confidence=False, quality=False, dedup_threshold=0.85),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("cluster_size", [4096, 8])  # one piece per class; k-means clusters
def test_per_shard_decisions_equal_the_whole_set_filter(scored: dict, name: str,
                                                        cluster_size: int, tmp_path: Path) -> None:
    settings = SETTINGS[name]
    expected, expected_summary = filter_samples(
        scored["keys"], scored["labels"], scored["probs"], scored["features"], scored["images"],
        settings, DIGIT_NAMES)
    selection = select_from_scores(scored["shards"], settings, clip=False, seed=0,
                                   spill_dir=tmp_path, cluster_size=cluster_size)
    records = list(iter_records(selection, DIGIT_NAMES))
    for record in records:
        del record["shard"]
    assert [r["key"] for r in records if r["keep"]] == [r["key"] for r in expected if r["keep"]]
    assert records == expected
    assert summarise_selection(selection, DIGIT_NAMES, settings) == expected_summary
    # The settings give each filter work to do (else equality would prove little).
    assert sum(not r["keep"] for r in expected) > 0
    if settings.dedup:
        assert any("duplicate" in r["reasons"] for r in expected)
    if cluster_size == 8:
        assert selection.dedup_stats.clusters > 10  # the clustered path ran


def test_scores_files_hold_every_column_and_say_whether_they_are_current(scored: dict) -> None:
    shard = scored["shards"][0]
    metadata = read_scores_metadata(shard.scores_path)
    columns = read_columns(shard.scores_path, ("labels", "probs", "embeddings", "dedup",
                                               "quality"))
    assert len(metadata["keys"]) == len(columns["labels"]) == 100
    assert columns["probs"].shape == (100, 10) and columns["embeddings"].shape[0] == 100
    assert columns["quality"][5] != 0  # the blank image
    sha = metadata["shard_sha256"]
    assert scores_are_current(shard.scores_path, shard_sha256=sha, judge_digest="judge-a")
    assert not scores_are_current(shard.scores_path, shard_sha256=sha, judge_digest="judge-b")
    assert not scores_are_current(shard.scores_path, shard_sha256="0" * 64, judge_digest="judge-a")
    broken = scored["root"] / "broken.safetensors"
    broken.write_bytes(shard.scores_path.read_bytes()[:50])  # a truncated upload
    assert not scores_are_current(broken, shard_sha256=sha, judge_digest="judge-a")


def test_clustered_dedup_equals_the_greedy_on_clustered_embeddings() -> None:
    """Many clusters and near-copies across cluster boundaries: the bound must keep every pair
    (comparing within a sample's own cluster only, as SemDeDup does, misses some)."""
    generator = np.random.default_rng(3)
    centres = generator.normal(size=(30, 16))
    features = (centres[generator.integers(0, 30, 4000)]
                + 0.2 * generator.normal(size=(4000, 16))).astype(np.float32)
    copies = generator.integers(0, 4000, 800)
    features[generator.integers(0, 4000, 800)] = features[copies] + 0.03 * generator.normal(
        size=(800, 16)).astype(np.float32)
    order = generator.permutation(4000)
    walk = np.empty(4000, np.int64)
    walk[order] = np.arange(4000)
    expected, expected_group = near_duplicates(features, np.zeros(4000, np.int64), order,
                                               threshold=0.97)
    duplicate, group, stats = dedup_class(lambda rows: features[rows], 4000, walk,
                                          threshold=0.97, cluster_size=100, seed=0)
    assert stats.clusters == 40 and stats.pairs_compared < 4000 * 4000
    assert np.array_equal(duplicate, expected) and expected.sum() > 300
    assert np.array_equal(group[duplicate], expected_group[expected])


def test_clip_score_without_clip_scores_names_the_fix(scored: dict) -> None:
    with pytest.raises(ValueError, match="set judge.backend: clip"):
        select_from_scores(scored["shards"], dataclasses.replace(FilterSettings(), clip_score=0.2),
                           clip=False, seed=0)
