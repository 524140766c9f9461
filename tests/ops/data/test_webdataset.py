"""Users' own WebDataset shards as the real image source: labels, patterns, untrusted members."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from synthfactory.ops.data.real_images import list_classes
from synthfactory.ops.data.webdataset import load_webdataset, resolve_shards
from tests.support import add_member, class_images, png_bytes, write_labelled_webdataset

CLASSES = ["airplane", "automobile", "bird"]


@pytest.mark.parametrize("label", ["cls", "json"])
def test_labels_from_cls_or_json_any_resolution(tmp_path: Path, label: str) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", CLASSES, 4, size=40, label=label)
    assert list_classes("webdataset", str(root)) == CLASSES  # from classes.txt
    dataset = load_webdataset(str(root), 16, 3, CLASSES)
    assert dataset.images.shape == (12, 16, 16, 3)
    assert sorted(dataset.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert not dataset.skipped
    # Each image keeps its class's colour after resizing: the labels belong to the right pixels.
    for image, label_id in zip(dataset.images, dataset.labels, strict=True):
        assert int(image.reshape(-1, 3).mean(0).argmax()) == [0, 1, 2][label_id]


def test_directory_glob_and_brace_patterns_name_the_same_shards(tmp_path: Path) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", CLASSES, 2, n_shards=3)
    by_dir = resolve_shards(str(root))
    assert [p.name for p in by_dir] == ["data-000.tar", "data-001.tar", "data-002.tar"]
    assert resolve_shards(str(root / "data-*.tar")) == by_dir
    assert resolve_shards(str(root / "data-{000..002}.tar")) == by_dir
    with pytest.raises(FileNotFoundError, match=r"missing shards .*data-003.tar"):
        resolve_shards(str(root / "data-{000..003}.tar"))


def test_bad_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", CLASSES, 2, n_shards=1)
    with tarfile.open(root / "data-001.tar", "w") as tar:
        image = png_bytes(class_images(0, 1, 8)[0])
        add_member(tar, "nolabel.png", image)
        add_member(tar, "badlabel.png", image)
        add_member(tar, "badlabel.cls", b"seven")
        add_member(tar, "outside.png", image)
        add_member(tar, "outside.cls", b"9")
        add_member(tar, "corrupt.png", b"\x89PNG not really")
        add_member(tar, "corrupt.cls", b"0")
        add_member(tar, "textonly.txt", b"hello")
    dataset = load_webdataset(str(root), 8, 3, CLASSES)
    assert len(dataset.labels) == 6
    assert dict(dataset.skipped) == {"sample without a label": 1, "label is not an integer": 1,
                                     "label not in class_names": 1, "unrecognised image format": 1,
                                     "sample without an image": 1}


@pytest.mark.parametrize("name", ["/etc/passwd.png", "../escape.png", "a/../../b.png"])
def test_members_with_absolute_or_parent_paths_are_refused(tmp_path: Path, name: str) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", CLASSES, 2, n_shards=1)
    with tarfile.open(root / "data-001.tar", "w") as tar:
        add_member(tar, name, png_bytes(class_images(0, 1, 8)[0]))
    with pytest.raises(ValueError, match=r"data-001.tar: member .* absolute path or '\.\.'"):
        load_webdataset(str(root), 8, 3, CLASSES)


def test_links_in_a_shard_are_refused(tmp_path: Path) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", CLASSES, 2, n_shards=1)
    with tarfile.open(root / "data-001.tar", "w") as tar:
        link = tarfile.TarInfo("sneaky.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tar.addfile(link, io.BytesIO(b""))
    with pytest.raises(ValueError, match="'sneaky.png' is a link or device"):
        load_webdataset(str(root), 8, 3, CLASSES)


def test_missing_class_list_and_empty_class_are_errors(tmp_path: Path) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", CLASSES, 2)
    (root / "classes.txt").unlink()
    with pytest.raises(ValueError, match="no classes.txt or classes.json .* real_images.class_names"):
        list_classes("webdataset", str(root))
    assert list_classes("webdataset", str(root), ["bird", "airplane"]) == ["bird", "airplane"]
    with pytest.raises(ValueError, match=r"classes \['cat'\] have no readable image"):
        load_webdataset(str(root), 8, 3, [*CLASSES, "cat"])
