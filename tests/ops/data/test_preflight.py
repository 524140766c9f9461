"""The preflight: counting without decoding, the same splits as real_images, refusals, warnings."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthfactory.ops.data.preflight import (
    MIN_PER_SPLIT,
    TooFewImages,
    check_class_count,
    check_every_class,
    check_split_counts,
    class_size_warnings,
    counts_of,
    minimum_images,
    source_counts,
    split_counts,
)
from synthfactory.ops.data.splits import carve_validation, stratified_split
from tests.support import add_member, png_bytes, write_labelled_webdataset


@pytest.mark.parametrize("sizes", [[3, 7, 50], [2, 180, 11, 4], [1, 1000]])
def test_split_counts_are_what_real_images_makes(sizes: list[int]) -> None:
    """The preflight predicts real_images' per-class split sizes exactly (else it could pass a
    class that real_images then refuses, or refuse one it would accept)."""
    names = [f"c{i}" for i in range(len(sizes))]
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(len(sizes)), sizes))
    train, test = stratified_split(labels, 0.3, seed=5)
    train, val = carve_validation(labels, train, 0.1, seed=5)
    actual = counts_of(labels, {"train": train, "val": val, "test": test}, names)
    assert split_counts(dict(zip(names, sizes, strict=True)), 0.3, 0.1, seed=5) == actual


def test_minimum_images_is_the_smallest_class_that_passes() -> None:
    for test_fraction, val_fraction, own_test in [(0.3, 0.1, False), (0.5, 0.5, False),
                                                  (0.3, 0.1, True)]:
        minimum = minimum_images(test_fraction, val_fraction, 0, own_test)
        tests = {"c": 1} if own_test else None
        passes = [all(split_counts({"c": n}, test_fraction, val_fraction, 0, tests)[s]["c"] >= need
                      for s, need in MIN_PER_SPLIT.items()) for n in range(1, minimum + 1)]
        assert passes == [False] * (minimum - 1) + [True]
    assert minimum_images(0.3, 0.1, 0, False) == 3  # 1 train, 1 validation, 1 test


def test_too_few_images_in_a_split_is_refused_on_one_line_naming_the_class() -> None:
    counts = split_counts({"cat": 40, "dog": 2}, 0.3, 0.1, 0)
    with pytest.raises(ValueError) as error:
        check_split_counts(counts, "real_images.root 'photos'", 3)
    message = str(error.value)
    assert "\n" not in message
    assert "'dog': 1 train, 0 validation, 1 test" in message and "'cat'" not in message
    assert "at least 1 train, 1 validation, 1 test image (3 images per class" in message
    check_split_counts(split_counts({"cat": 40, "dog": 3}, 0.3, 0.1, 0), "x", 3)  # enough


def test_one_class_is_refused_and_two_pass() -> None:
    with pytest.raises(ValueError, match=r"real_images.root 'p' gives 1 class \('cat'\): a "
                                         r"classification needs at least 2 classes"):
        check_class_count(["cat"], "real_images.root 'p'")
    check_class_count(["cat", "dog"], "real_images.root 'p'")


def test_a_set_missing_a_class_raises_too_few_images() -> None:
    with pytest.raises(TooFewImages, match=r"the filtered set has no image of class\(es\) 'b'"):
        check_every_class(np.array([0, 0, 2]), ["a", "b", "c"], "the filtered set", "loosen it")
    check_every_class(np.array([0, 1, 2]), ["a", "b", "c"], "the filtered set", "loosen it")
    assert issubclass(TooFewImages, ValueError)  # outside an arm it is still bad input


def test_imagefolder_counts_image_files_without_decoding(tmp_path: Path) -> None:
    (tmp_path / "cat" / "deep").mkdir(parents=True)
    (tmp_path / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "a.png")
    (tmp_path / "cat" / "deep" / "b.JPG").write_text("never decoded")  # counted: an upper bound
    (tmp_path / "cat" / "empty.png").write_bytes(b"")                 # not counted
    (tmp_path / "cat" / "notes.txt").write_text("not an image")        # not counted
    assert source_counts("imagefolder", str(tmp_path), ["cat", "dog"]) == {"cat": 2, "dog": 0}
    assert source_counts("digits", None, ["0", "1"]) == {}


def test_webdataset_counts_labels_without_reading_images(tmp_path: Path) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", ["cat", "dog"], per_class=4, label="json")
    with tarfile.open(root / "data-000.tar", "a") as tar:
        add_member(tar, "extra.png", b"garbage that is never decoded")
        add_member(tar, "extra.cls", b"1")
        add_member(tar, "nolabel.png", png_bytes(np.zeros((4, 4, 3), np.uint8)))
    assert source_counts("webdataset", str(root), ["cat", "dog"]) == {"cat": 4, "dog": 5}


def test_class_size_warnings_at_their_thresholds() -> None:
    def counts(train: dict[str, int], test: dict[str, int]) -> dict[str, dict[str, int]]:
        return {"train": train, "val": dict.fromkeys(train, 5), "test": test}

    balanced = counts({"a": 100, "b": 10}, {"a": 20, "b": 20})
    assert class_size_warnings(balanced) == []  # 10x exactly, 20 test images: fine
    skewed = class_size_warnings(counts({"a": 101, "b": 10}, {"a": 20, "b": 19}))
    assert len(skewed) == 2
    assert "imbalanced train split: class 'a' has 101 images, 'b' 10 (10.1x" in skewed[0]
    assert "fewer than 20 test images: 'b' (19)" in skewed[1] and "noise" in skewed[1]
