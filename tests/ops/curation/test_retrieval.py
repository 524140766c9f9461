"""The retrieval baseline: ranking a pool by similarity to each class, one label per image, the
label precision against hidden labels, and reading pools from image folders and WebDataset."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from synthfactory.ops.curation.retrieval import (class_prototypes, label_precision,
                                                 labelled_split, retrieve, unit_rows)
from synthfactory.ops.data.pool import NO_LABEL, load_pool
from tests.support import add_member, class_images, png_bytes


def test_each_class_takes_its_nearest_images_and_no_image_is_taken_twice() -> None:
    queries = np.eye(3)
    pool = np.array([[1.0, 0.1, 0], [0.9, 0.5, 0], [0.2, 1.0, 0], [0.6, 0.55, 0],
                     [0, 0.1, 1.0], [0.1, 0, 0.8]])
    found = retrieve(pool, queries, per_class=2)
    pairs = list(zip(found.classes.tolist(), found.indices.tolist(), strict=True))
    # Image 3 is a little closer to class 0 than to class 1: it competes for class 0 only, where
    # images 0 and 1 beat it; class 1 keeps only image 2.
    assert pairs == [(0, 0), (0, 1), (1, 2), (2, 4), (2, 5)]
    assert len(set(found.indices.tolist())) == len(found.indices)
    assert np.all(np.diff(found.scores[:2]) <= 0)  # most similar first within a class
    with pytest.raises(ValueError, match="per_class 0 must be positive"):
        retrieve(pool, queries, per_class=0)


def test_prototypes_are_unit_class_means() -> None:
    features = np.array([[2.0, 0], [0, 3.0], [4.0, 0.1]])
    prototypes = class_prototypes(features, np.array([0, 1, 0]), 2)
    assert np.allclose(np.linalg.norm(prototypes, axis=1), 1.0)
    assert np.allclose(prototypes[1], [0, 1])
    assert np.allclose(prototypes, unit_rows(prototypes))
    with pytest.raises(ValueError, match=r"classes \[2\] have no real training image"):
        class_prototypes(features, np.array([0, 1, 0]), 3)


def test_label_precision_counts_only_hidden_labels() -> None:
    classes = np.array([0, 0, 1, 1])
    hidden = np.array([0, 1, 1, NO_LABEL])
    precision = label_precision(classes, hidden, ["a", "b"])
    assert precision == {"overall": pytest.approx(2 / 3), "labelled": 3,
                         "per_class": {"a": 0.5, "b": 1.0}}
    assert label_precision(classes, np.full(4, NO_LABEL), ["a", "b"]) is None


def test_pool_from_an_image_folder_hides_class_folders_and_counts_bad_files(tmp_path: Path
                                                                            ) -> None:
    for label, name in enumerate(["red", "green"]):
        (tmp_path / name).mkdir()
        for index, image in enumerate(class_images(label, 2, 12)):
            (tmp_path / name / f"{index}.png").write_bytes(png_bytes(image))
    (tmp_path / "loose.png").write_bytes(png_bytes(class_images(2, 1, 12)[0]))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("hello")
    pool = load_pool(str(tmp_path), 8, 3, ["red", "green"])
    assert pool.images.shape == (5, 8, 8, 3)
    assert dict(zip(pool.keys, pool.hidden_labels.tolist(), strict=True)) == {
        "green/0.png": 1, "green/1.png": 1, "loose.png": NO_LABEL, "red/0.png": 0,
        "red/1.png": 0}
    assert pool.labelled == 4
    assert dict(pool.skipped) == {"not an image file": 1, "unrecognised image format": 1}


def test_pool_from_webdataset_shards_with_and_without_labels(tmp_path: Path) -> None:
    images = class_images(0, 3, 10)
    with tarfile.open(tmp_path / "pool-000.tar", "w") as tar:
        add_member(tar, "a.png", png_bytes(images[0]))
        add_member(tar, "a.cls", b"1")
        add_member(tar, "b.png", png_bytes(images[1]))  # unlabeled: fine in a pool
        add_member(tar, "c.cls", b"0")                   # no image: skipped, counted
    pool = load_pool(str(tmp_path), 8, 1, ["x", "y"])
    assert pool.keys == ["pool-000.tar:a", "pool-000.tar:b"]
    assert pool.hidden_labels.tolist() == [1, NO_LABEL]
    assert pool.images.shape == (2, 8, 8, 1) and dict(pool.skipped) == {
        "sample without an image": 1}
    with pytest.raises(FileNotFoundError, match="retrieval.pool .* does not exist"):
        load_pool(str(tmp_path / "missing"), 8, 1, ["x"])


def test_the_labelled_part_is_seeded_per_class_and_disjoint_from_the_pool() -> None:
    labels = np.array([0] * 12 + [1] * 7 + [2] * 2)
    labelled, pool = labelled_split(labels, 3, seed=0)
    # At most half of a class (at least one): a small class keeps images in the pool.
    assert np.bincount(labels[labelled]).tolist() == [3, 3, 1]
    assert np.bincount(labels[pool]).tolist() == [9, 4, 1]
    assert not set(labelled.tolist()) & set(pool.tolist())
    assert sorted(labelled.tolist() + pool.tolist()) == list(range(len(labels)))
    again, _ = labelled_split(labels, 3, seed=0)
    other, _ = labelled_split(labels, 3, seed=1)
    assert np.array_equal(labelled, again) and not np.array_equal(labelled, other)
    with pytest.raises(ValueError, match="labelled_per_class 0 must be positive"):
        labelled_split(labels, 0, seed=0)


def _split_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 pool_labels: np.ndarray) -> tuple[Path, np.ndarray]:
    """A real_images directory as retrieved_set reads it: 3 classes of 8×8 colour images, 12
    train images each (the pool's hidden labels replaced by `pool_labels` after the labelled
    part is drawn), 4 validation images each."""
    from synthfactory.ops.curation import retrieved_set as module

    train = np.concatenate([np.stack(class_images(label, 12, 8)) for label in range(3)])
    labels = np.repeat(np.arange(3), 12)
    val = np.concatenate([np.stack(class_images(label, 4, 8, seed=1)) for label in range(3)])
    keys = [f"train{index:07d}" for index in range(len(labels))]
    labelled, pool = labelled_split(labels, 2, seed=0)
    shown = labels.copy()
    shown[pool] = pool_labels

    def read_split(real_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if split == "train":
            return train, shown, keys
        return val, np.repeat(np.arange(3), 4), [f"val{index}" for index in range(12)]

    monkeypatch.setattr(module, "read_split", read_split)
    # The labelled part is drawn per class from the true labels (as someone labelling K images
    # of each class would); what follows it must not read the pool's labels.
    monkeypatch.setattr(module, "labelled_split", lambda *args: (labelled, pool))
    monkeypatch.setattr(module, "read_classes", lambda real_dir: ["r", "g", "b"])
    (tmp_path / "manifest.json").write_text('{"few_shot_keys": null}')
    return tmp_path, labelled


@pytest.mark.parametrize("embedding", ["pixels", "labelled_convnet"])
def test_the_train_split_pool_is_ranked_without_reading_its_labels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedding: str) -> None:
    """Scrambling the pool's hidden labels changes the label precision and nothing else: the
    embedding and the prototypes learned from the labelled part only, and the pool excludes it."""
    import torch

    from synthfactory.ops.curation.judge_training import JudgeSettings
    from synthfactory.ops.curation.retrieved_set import RetrievalSettings, retrieve_set

    settings = RetrievalSettings(
        pool=None, per_class=5, labelled_per_class=2, embedding=embedding,
        judge=JudgeSettings("convnet", 1, 8, False, None, None, False, [], 64, None),
        feature_threshold=0.95, pixel_threshold=0.995, pixel_resolution=16)
    made = []
    true_pool_labels = np.repeat(np.arange(3), 10)  # 12 per class less 2 labelled, in order
    for pool_labels in (true_pool_labels, np.roll(true_pool_labels, 10)):
        real_dir, labelled = _split_store(tmp_path, monkeypatch, pool_labels)
        made.append(retrieve_set(real_dir, None, settings, seed=0, device=torch.device("cpu")))
    honest, scrambled = made
    assert np.array_equal(honest.found.indices, scrambled.found.indices)
    assert np.array_equal(honest.found.classes, scrambled.found.classes)
    assert np.allclose(honest.found.scores, scrambled.found.scores)
    summary = honest.summary
    assert summary["labelled"] == {"per_class": 2, "size": 6, "excluded_from_pool": True,
                                   "source": "a seeded per-class split of the train split"}
    assert summary["pool_size"] == 30 and summary["embedding"]["kind"] == embedding
    assert not {f"train{i:07d}" for i in labelled} & set(honest.pool.keys)
    assert 0.0 <= summary["embedding"]["val_prototype_accuracy"] <= 1.0
    assert summary["test_near_copies"] is None and "labelled part" in summary["query"]
    assert summary["label_precision"]["overall"] == 1.0  # distinct colours: easy
    assert scrambled.summary["label_precision"]["overall"] == 0.0
