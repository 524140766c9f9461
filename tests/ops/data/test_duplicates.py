"""Exact copies among the real images (ops/data/duplicates.py), the splits that keep each group
of copies on one side, and how an image folder is read: EXIF orientation, hidden files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthfactory.ops.data.duplicates import duplicate_groups, summarise_duplicates
from synthfactory.ops.data.imagefolder import load_imagefolder
from synthfactory.ops.data.preflight import preflight_pool, source_counts
from synthfactory.ops.data.real_set import RealImagesSettings, split_real_images
from synthfactory.ops.data.splits import carve_validation, stratified_split


def _images_with_copies(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of 40 images drawn from 12 distinct images per class: most have copies."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(4):
        distinct = rng.integers(0, 256, size=(12, 8, 8, 1), dtype=np.uint8)
        images.append(distinct[rng.integers(0, 12, size=40)])
        labels += [label] * 40
    return np.concatenate(images), np.asarray(labels)


def test_identical_pixels_share_a_group_and_nothing_else_does() -> None:
    images = np.zeros((5, 4, 4, 1), np.uint8)
    images[1, 0, 0, 0] = 1  # one pixel differs: not a copy
    images[3] = images[1]
    groups = duplicate_groups(images)
    assert groups.tolist() == [0, 1, 0, 1, 0]
    # The same bytes in another shape are another image.
    assert duplicate_groups(np.zeros((2, 4, 4, 1), np.uint8)).tolist() == [0, 0]


def test_without_copies_the_grouped_split_is_the_plain_split() -> None:
    """Stores made before copies were grouped keep their splits (the digits have no copies)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, size=500)
    singletons = np.arange(len(labels))
    for seed in (0, 1):
        plain = stratified_split(labels, 0.3, seed)
        grouped = stratified_split(labels, 0.3, seed, singletons)
        assert all(np.array_equal(a, b) for a, b in zip(plain, grouped, strict=True))
        plain_val = carve_validation(labels, plain[0], 0.1, seed)
        grouped_val = carve_validation(labels, plain[0], 0.1, seed, singletons)
        assert all(np.array_equal(a, b) for a, b in zip(plain_val, grouped_val, strict=True))


def test_copies_never_straddle_train_val_and_test() -> None:
    images, labels = _images_with_copies()
    groups = duplicate_groups(images)
    # The bad case: the plain split puts copies of test images in train.
    train, test = stratified_split(labels, 0.3, seed=0)
    assert set(groups[train]) & set(groups[test])
    train, test = stratified_split(labels, 0.3, seed=0, groups=groups)
    train, val = carve_validation(labels, train, 0.2, seed=0, groups=groups)
    sides = [set(groups[part].tolist()) for part in (train, val, test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(train) + len(val) + len(test) == len(labels)
    for label in range(4):
        in_test = int(np.sum(labels[test] == label))
        assert np.sum(labels[train] == label) >= 1 and np.sum(labels[val] == label) >= 1
        assert 12 <= in_test <= 12 + 8  # the target 12, overshot by at most one group's copies


def test_one_large_group_does_not_empty_a_side() -> None:
    """A class whose first shuffled group is most of it still keeps a group on each side."""
    images = np.zeros((10, 2, 2, 1), np.uint8)
    images[8, 0, 0, 0], images[9, 0, 0, 0] = 1, 2  # 8 copies of one image and two others
    labels = np.zeros(10, np.int64)
    groups = duplicate_groups(images)
    for seed in range(20):
        train, test = stratified_split(labels, 0.3, seed, groups)
        assert len(train) and len(test)
        assert not set(groups[train]) & set(groups[test])


def test_label_conflicts_stay_on_one_side_and_are_named() -> None:
    images, labels = _images_with_copies(seed=1)
    images[5] = images[100]  # an image of class 0 also labelled 2
    groups = duplicate_groups(images)
    train, test = stratified_split(labels, 0.3, seed=0, groups=groups)
    assert (5 in test) == (100 in test)
    sources = [f"{labels[i]}/{i:03d}.png" for i in range(len(labels))]
    summary = summarise_duplicates(groups, labels, sources, ["a", "b", "c", "d"])
    assert summary.label_conflicts == 1
    assert summary.examples[0]["classes"] == ["a", "c"]
    assert "0/005.png" in summary.examples[0]["sources"]
    assert summary.copies == len(labels) - len(set(groups.tolist()))
    warnings = summary.warnings()
    assert "labelled with two or more classes" in warnings[0] and "0/005.png" in warnings[0]
    assert f"{summary.copies} image(s) are exact copies" in warnings[1]
    clean = summarise_duplicates(np.arange(4), np.arange(4), ["w", "x", "y", "z"], list("abcd"))
    assert clean.warnings() == [] and clean.as_json()["copies"] == 0


def _settings(root: Path, test_root: Path | None = None) -> RealImagesSettings:
    return RealImagesSettings(source="imagefolder", root=str(root),
                              test_root=None if test_root is None else str(test_root),
                              class_names=None, resolution=8, channels=1, test_fraction=0.3,
                              val_fraction=0.2, shard_size=100, few_shot=None, seed=0,
                              train_needed=1, info={})


def _write(folder: Path, name: str, value: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8), value, np.uint8)
    pixels[0, 0] = 255 - value
    Image.fromarray(pixels).save(folder / name)


def test_a_folder_with_copies_is_split_without_leaks_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for label, name in enumerate(["cat", "dog"]):
        for index in range(12):
            _write(root / name, f"{index:02d}.png", 10 * index + label)
        for index in range(4):  # the same photo saved again under another name
            _write(root / name, f"{index:02d}-copy.png", 10 * index + label)
    warnings: list[str] = []
    split = split_real_images(_settings(root), warnings.append)
    groups = duplicate_groups(split.dataset.images)
    sides = {name: set(groups[indices].tolist()) for name, indices in split.splits.items()}
    assert not (sides["train"] & sides["test"] or sides["val"] & sides["test"]
                or sides["train"] & sides["val"])
    assert split.duplicates["copies"] == 8 and split.duplicates["label_conflicts"] == 0
    assert any("8 image(s) are exact copies" in w for w in warnings)
    manifest = split.write(tmp_path / "store")
    assert manifest["duplicates"]["groups"] == 8


def test_training_copies_of_the_users_test_set_are_left_out(tmp_path: Path) -> None:
    root, test_root = tmp_path / "train", tmp_path / "test"
    for name, offset in (("cat", 0), ("dog", 1)):
        for index in range(10):
            _write(root / name, f"{index:02d}.png", 20 * index + offset)
        for index in range(3):
            _write(test_root / name, f"t{index}.png", 200 + 10 * index + offset)
    _write(root / "cat", "leak.png", 200)  # a copy of cat/t0.png, the test image
    warnings: list[str] = []
    split = split_real_images(_settings(root, test_root), warnings.append)
    test_groups = set(duplicate_groups(split.dataset.images)[split.splits["test"]].tolist())
    kept = np.concatenate([split.splits["train"], split.splits["val"]])
    assert not set(duplicate_groups(split.dataset.images)[kept].tolist()) & test_groups
    assert len(split.splits["test"]) == 6  # the test set as the user gave it
    assert split.dataset.skipped["identical to a test_root image (left out of training)"] == 1
    assert any("identical to a test_root image" in w for w in warnings)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone stores a portrait photo sideways with orientation 6 ("rotate 90° clockwise to
    show"); read without it the image lies on its side."""
    stored = np.zeros((16, 16), np.uint8)
    stored[:, :8] = 255  # left half white as stored: the top half once turned upright
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "a").mkdir()
    image.save(tmp_path / "a" / "photo.png", exif=exif)
    image.save(tmp_path / "a" / "plain.png")
    data = load_imagefolder(str(tmp_path), resolution=16, channels=1)
    photo = data.images[data.sources.index("a/photo.png"), :, :, 0]
    plain = data.images[data.sources.index("a/plain.png"), :, :, 0]
    assert photo[:8].min() == 255 and photo[8:].max() == 0
    assert plain[:, :8].min() == 255 and plain[:, 8:].max() == 0  # no tag: as stored


def test_hidden_files_are_not_read_as_images(tmp_path: Path) -> None:
    """`.DS_Store`, macOS `._x.png` forks and `.ipynb_checkpoints/` copies are skipped and
    counted, and the preflight does not count them either."""
    _write(tmp_path / "cat", "a.png", 10)
    _write(tmp_path / "cat", "b.png", 20)
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _write(tmp_path / "cat" / ".ipynb_checkpoints", "a-checkpoint.png", 10)
    data = load_imagefolder(str(tmp_path), resolution=8, channels=1)
    assert sorted(data.sources) == ["cat/a.png", "cat/b.png"]
    assert data.skipped == {"hidden file (its name or a folder on its path starts with '.')": 3}
    assert source_counts("imagefolder", str(tmp_path), ["cat"]) == {"cat": 2}
    assert preflight_pool(str(tmp_path)) == 2


def test_unusable_files_and_label_conflicts_reach_the_reports_warnings(tmp_path: Path) -> None:
    """A folder of phone photos half in HEIC (which Pillow cannot decode) and one image filed
    under two classes: the report's first section says both, with the numbers; a clean folder
    says nothing."""
    from synthfactory.ops.evaluation.soundness import DEFAULT_BOUNDS, real_data_warnings

    bound = DEFAULT_BOUNDS["max_skipped_share"]
    root = tmp_path / "images"
    for label, name in enumerate(["cat", "dog"]):
        for index in range(10):
            _write(root / name, f"{index:02d}.jpg", 20 * index + label)
        for index in range(4):
            (root / name / f"IMG_{index:04d}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    clean = split_real_images(_settings(root), lambda _: None).write(tmp_path / "clean")
    skipped = clean["skipped"]
    assert skipped == {"HEIC image (Pillow cannot decode it: convert the files to JPEG or PNG)": 8}
    [found] = real_data_warnings(clean, bound)
    assert (found["kind"], found["value"], found["bound"]) == ("skipped_images", 0.2857, 0.05)
    assert "8 of 28 real image files (29%, bound 5%)" in found["message"]
    assert "8 HEIC image" in found["message"]

    _write(root / "dog", "same-as-cat.jpg", 0)  # cat/00.jpg filed under dog as well
    for path in root.rglob("*.HEIC"):
        path.unlink()
    manifest = split_real_images(_settings(root), lambda _: None).write(tmp_path / "conflict")
    [found] = real_data_warnings(manifest, bound)
    assert (found["kind"], found["value"]) == ("label_conflicts", 1)
    assert "cat/00.jpg, dog/same-as-cat.jpg in cat, dog" in found["message"]
    (root / "dog" / "same-as-cat.jpg").unlink()
    (root / "cat" / ".DS_Store").write_bytes(b"Bud1")  # hidden files are not lost images,
    for name in ("cat", "dog"):  # nor are notes beside the images
        (root / name / "labels.csv").write_text("file,label\n")
    manifest = split_real_images(_settings(root), lambda _: None).write(tmp_path / "ok")
    assert manifest["skipped"]["not an image file"] == 2
    assert real_data_warnings(manifest, bound) == []
    for index in range(2):  # but a camera's RAW files are images that could not be read
        (root / "dog" / f"DSC_{index}.NEF").write_bytes(b"MM\x00*raw")
    manifest = split_real_images(_settings(root), lambda _: None).write(tmp_path / "raw")
    [raw] = real_data_warnings(manifest, bound)
    assert "2 camera RAW image (Pillow cannot decode it" in raw["message"]
    from synthfactory.ops.report.document import render_markdown
    from synthfactory.ops.report.warnings import warnings_section

    section = warnings_section({"warnings": [found]}, {})
    assert section is not None
    assert "| identical real images under two classes | real_images | 1 | 0 |" in render_markdown(
        [section])


def test_a_class_of_heic_photos_is_refused_before_any_work_naming_the_format(
        tmp_path: Path) -> None:
    from synthfactory.ops.data.preflight import preflight_counts

    for name in ("cat", "dog"):
        for index in range(6):
            _write(tmp_path / name, f"{index}.png", index)
    for index in range(6):
        (tmp_path / "dog" / f"{index}.png").unlink()
        (tmp_path / "dog" / f"IMG_{index}.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(ValueError, match=r"'dog': 0 train.*; 6 file\(s\) under the class "
                                         r"folders are HEIC images, which Pillow cannot decode"):
        preflight_counts("imagefolder", str(tmp_path), None, ["cat", "dog"], 0.3, 0.1, 0)
