"""Real data: digits, a user's image folder (messy files included), the stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.data.imagefolder import load_imagefolder
from synthfactory.ops.data.images import to_square
from synthfactory.ops.data.real_images import (
    list_classes,
    read_classes,
    read_split,
    read_training_images,
    write_real_images,
)
from synthfactory.ops.data.splits import carve_validation, few_shot_subset, stratified_split


def test_digits_are_uint8_images_with_ten_classes() -> None:
    data = load_digits(resolution=8, channels=1)
    assert data.images.shape == (1797, 8, 8, 1) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.class_names == [str(d) for d in range(10)]
    assert load_digits(resolution=16, channels=3).images.shape == (1797, 16, 16, 3)


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 3, 2])
    train, test = stratified_split(labels, 0.3, seed=1)
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(labels)
    for label, size in enumerate([10, 20, 3, 2]):
        n_test = int(np.sum(labels[test] == label))
        assert n_test >= 1 and np.sum(labels[train] == label) >= 1
        assert abs(n_test - 0.3 * size) <= 1
    again = stratified_split(labels, 0.3, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(labels, 0.3, seed=2)[1])


def test_a_class_of_one_image_is_tested_not_left_out() -> None:
    """round(1 × 0.3) = 0 once left a one-image class without a test image (and its accuracy
    undefined); the rule puts it in test. Classes of two keep one image in each split."""
    labels = np.repeat(np.arange(3), [1, 2, 10])
    train, test = stratified_split(labels, 0.3, seed=0)
    assert np.bincount(labels[test], minlength=3).tolist() == [1, 1, 3]
    assert np.bincount(labels[train], minlength=3).tolist() == [0, 1, 7]


def _make_folder(root: Path) -> None:
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "cat" / "wide.png")
    Image.new("L", (10, 10), 128).save(root / "cat" / "grey.jpg")
    Image.new("RGBA", (12, 12), (0, 0, 255, 0)).save(root / "dog" / "transparent.png")
    Image.new("CMYK", (9, 9), (0, 255, 0, 0)).save(root / "dog" / "cmyk.jpg")
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(root / "dog" / "deep.png")
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "dog" / "notes.txt").write_text("not an image")


def test_imagefolder_reads_any_mode_and_counts_what_it_skips(tmp_path: Path) -> None:
    _make_folder(tmp_path)
    data = load_imagefolder(str(tmp_path), resolution=8, channels=3)
    assert data.class_names == ["cat", "dog"]
    assert data.images.shape == (5, 8, 8, 3)
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert dict(data.skipped) == {"empty file": 1, "unrecognised image format": 1,
                                  "not an image file": 1}
    assert dict(data.converted) == {"RGBA": 1, "CMYK": 1, "I;16": 1}
    transparent = data.images[data.sources.index("dog/transparent.png")]
    assert transparent.min() == 255  # fully transparent composites onto white
    deep = data.images[data.sources.index("dog/deep.png")]
    assert deep.max() == 255  # 16-bit scaled to 8 bits, not clipped


def test_imagefolder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        list_classes("imagefolder", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no class folders"):
        list_classes("imagefolder", str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="'empty_class'.*no readable image"):
        load_imagefolder(str(tmp_path), 8, 3)


def test_to_square_centre_crops_before_resizing() -> None:
    image = Image.new("L", (30, 10), 0)
    image.paste(255, (10, 0, 20, 10))  # a bright centre square between dark sides
    assert to_square(image, 4, 1).min() > 200


def test_validation_is_carved_from_train_per_class_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [40, 20, 2, 1])
    train, test = stratified_split(labels, 0.3, seed=1)
    kept, val = carve_validation(labels, train, 0.1, seed=1)
    assert set(kept).isdisjoint(val) and set(kept) | set(val) == set(train)
    assert set(val).isdisjoint(test)
    for label in (0, 1):
        n_train = int(np.sum(labels[train] == label))
        assert int(np.sum(labels[val] == label)) == max(1, round(0.1 * n_train))
    # A class with two train images gives one to val; with one, keeps it for training.
    assert np.sum(labels[val] == 2) == (1 if np.sum(labels[train] == 2) >= 2 else 0)
    assert np.sum(labels[val] == 3) == 0 and np.sum(labels[kept] == 3) == np.sum(labels[train] == 3)
    again = carve_validation(labels, train, 0.1, seed=1)
    assert np.array_equal(val, again[1]) and not np.array_equal(
        val, carve_validation(labels, train, 0.1, seed=2)[1])
    with pytest.raises(ValueError, match="val_fraction = 0.0"):
        carve_validation(labels, train, 0.0, seed=1)


def test_written_splits_read_back_with_manifest(tmp_path: Path) -> None:
    data = load_digits(8, 1)
    train, test = stratified_split(data.labels, 0.3, seed=0)
    train, val = carve_validation(data.labels, train, 0.1, seed=0)
    manifest = write_real_images(tmp_path, data, {"train": train, "val": val, "test": test},
                                 shard_size=500, info={"x": 1})
    assert [s["name"] for s in manifest["shards"]] == [
        "train-00000.tar", "train-00001.tar", "train-00002.tar", "val-00000.tar",
        "test-00000.tar", "test-00001.tar"]
    for split, indices in (("train", train), ("val", val), ("test", test)):
        assert sum(manifest["counts"][split].values()) == len(indices)
        images, labels, _ = read_split(tmp_path, split)
        np.testing.assert_array_equal(images, data.images[indices])
        np.testing.assert_array_equal(labels, data.labels[indices])
    assert read_classes(tmp_path) == data.class_names
    with pytest.raises(ValueError, match="'holdout' is not one of train, val, test"):
        read_split(tmp_path, "holdout")


def test_few_shot_subset_is_what_models_learn_from(tmp_path: Path) -> None:
    data = load_digits(8, 1)
    train, test = stratified_split(data.labels, 0.3, seed=0)
    few = few_shot_subset(data.labels, train, per_class=5, seed=0)
    assert np.bincount(data.labels[few]).tolist() == [5] * 10 and set(few) <= set(train)
    write_real_images(tmp_path, data, {"train": train, "test": test}, shard_size=2000,
                      info={}, few_shot=few)
    images, labels, keys = read_training_images(tmp_path)
    assert len(images) == 50 and np.bincount(labels).tolist() == [5] * 10
    np.testing.assert_array_equal(images, data.images[few])
