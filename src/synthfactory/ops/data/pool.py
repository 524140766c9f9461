"""The unlabeled pool the retrieval baseline draws from: an image folder or WebDataset shards.

A pool's labels, where it has any, are *hidden*: retrieval never reads them; they only measure
the label precision of what was retrieved. An image folder's hidden label is the class folder a
file sits in (files outside class folders have none); a WebDataset sample's is its `.cls` /
`.json` label when present. Unreadable files are skipped and counted per reason, as for the
real images.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthfactory.ops.data.imagefolder import read_image_file
from synthfactory.ops.data.images import decode_image
from synthfactory.ops.data.webdataset import (WEBDATASET_IMAGE_EXTENSIONS, _tar_samples,
                                              _webdataset_label, resolve_shards)

NO_LABEL = -1


@dataclass
class Pool:
    """Images (uint8 N×H×W×C), hidden labels (NO_LABEL where unknown), keys, skip counts."""

    images: np.ndarray
    hidden_labels: np.ndarray
    keys: list[str]
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def labelled(self) -> int:
        """How many pool images have a hidden label."""
        return int(np.sum(self.hidden_labels != NO_LABEL))


def load_pool(pool: str, resolution: int, channels: int, class_names: list[str]) -> Pool:
    """Every readable image of `retrieval.pool`, at the real images' resolution and channels.

    A directory holding `.tar` files, a `.tar` file, a glob or a brace pattern is WebDataset;
    any other directory is an image folder, searched recursively.
    """
    path = Path(pool)
    if path.is_dir() and not any(path.glob("*.tar")):
        return _load_folder(path, resolution, channels, class_names)
    if not path.exists() and not any(char in pool for char in "*?[{"):
        raise FileNotFoundError(f"retrieval.pool {pool!r} does not exist: give an image folder, "
                                "a directory of .tar shards, a glob or a brace pattern")
    return _load_shards(pool, resolution, channels, class_names)


def _load_folder(root: Path, resolution: int, channels: int, class_names: list[str]) -> Pool:
    index = {name: label for label, name in enumerate(class_names)}
    images, labels, keys, skipped = [], [], [], Counter()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root)
        reason, decoded = read_image_file(file, root, resolution, channels)
        if decoded is None:
            skipped[str(reason)] += 1
            continue
        images.append(decoded[0])
        folder = relative.parts[0] if len(relative.parts) > 1 else None
        labels.append(index.get(folder, NO_LABEL) if folder is not None else NO_LABEL)
        keys.append(relative.as_posix())
    return _pool(images, labels, keys, skipped, str(root))


def _load_shards(pattern: str, resolution: int, channels: int, class_names: list[str]) -> Pool:
    index = {name: label for label, name in enumerate(class_names)}
    images, labels, keys, skipped = [], [], [], Counter()
    for tar_path in resolve_shards(pattern):
        for key, parts in _tar_samples(tar_path):
            image_ext = next((ext for ext in WEBDATASET_IMAGE_EXTENSIONS if ext in parts), None)
            if image_ext is None:
                skipped["sample without an image"] += 1
                continue
            data = parts[image_ext]
            reason, decoded = (("empty file", None) if not data
                               else decode_image(io.BytesIO(data), resolution, channels))
            if decoded is None:
                skipped[str(reason)] += 1
                continue
            label, _ = _webdataset_label(parts, index)  # hidden; unlabeled samples are fine
            images.append(decoded[0])
            labels.append(NO_LABEL if label is None else label)
            keys.append(f"{tar_path.name}:{key}")
    return _pool(images, labels, keys, skipped, pattern)


def _pool(images: list[np.ndarray], labels: list[int], keys: list[str], skipped: Counter[str],
          where: str) -> Pool:
    if not images:
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        raise ValueError(f"retrieval.pool {where!r} has no readable image (skipped: "
                         f"{why or 'no files'})")
    return Pool(np.stack(images), np.asarray(labels, dtype=np.int64), keys, skipped)
