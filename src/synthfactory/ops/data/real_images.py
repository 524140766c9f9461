"""The `real_images` asset's data: which source to read, and the store layout it is written in.

`list_classes` and `load_real` dispatch to one module per source (digits, imagefolder,
webdataset); `write_real_images` writes the splits as shards with `classes.json` and
`manifest.json`, and the `read_*` functions are how every later stage reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.data.digits import DIGIT_NAMES, load_digits
from synthfactory.ops.data.imagefolder import imagefolder_classes, load_imagefolder
from synthfactory.ops.data.images import RealDataset
from synthfactory.ops.data.preflight import check_class_count
from synthfactory.ops.data.prompts import check_class_names
from synthfactory.ops.data.webdataset import load_webdataset, webdataset_classes
from synthfactory.ops.storage.atomic import digest_of_digests, dumps_json
from synthfactory.ops.storage.shards import Sample, finished_shards, load_arrays, write_shard

CLASSES_JSON = "classes.json"
MANIFEST_JSON = "manifest.json"

SOURCES = ("digits", "imagefolder", "webdataset")
# Train learns, val chooses, test measures (read by eval_report only).
SPLITS = ("train", "val", "test")


def list_classes(source: str, root: str | None, class_names: list[str] | None = None) -> list[str]:
    """Class names of a source without loading images (cheap: used when definitions load).

    Explicit `class_names` win (their order is the label order); otherwise digits has its ten,
    an image folder its sub-folders, and a WebDataset the `classes.txt`/`classes.json` beside
    its shards.
    """
    if source not in SOURCES:
        raise ValueError(f"real_images.source {source!r} is not one of {', '.join(SOURCES)}")
    if class_names:
        check_class_names(class_names)
        names, where = list(class_names), "real_images.class_names"
    elif source == "digits":
        return list(DIGIT_NAMES)
    elif source == "imagefolder":
        names, where = imagefolder_classes(Path(root or "")), f"real_images.root {root!r}"
    else:
        names = webdataset_classes(root or "")
        where = f"the class list beside real_images.root {root!r}"
    # Refused here, before any work: every reader of the class list (definitions, prompts,
    # real_images) goes through this function.
    check_class_count(names, where)
    return names


def load_real(source: str, root: str | None, resolution: int, channels: int,
              class_names: list[str]) -> RealDataset:
    """The images of one source (digits, imagefolder or webdataset) for the given classes."""
    if source == "digits":
        return load_digits(resolution, channels)
    if source == "imagefolder":
        return load_imagefolder(str(root), resolution, channels, class_names)
    return load_webdataset(str(root), resolution, channels, class_names)


def write_real_images(directory: Path, dataset: RealDataset, splits: Mapping[str, np.ndarray],
                      shard_size: int, info: dict[str, Any],
                      few_shot: np.ndarray | None = None) -> dict[str, Any]:
    """Write the splits (`train`, `val`, `test`: dataset indices) as shards, `classes.json`,
    and `manifest.json` last.

    Returns the manifest: counts per split and class, the sha256 of every shard, skipped files,
    the keys of the few-shot subset of train (when one is asked for), and a digest over all shards.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits {unknown} are not among {SPLITS}")
    shards = []
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        indices = splits.get(split, np.zeros(0, np.int64))
        counts[split] = {name: int(np.sum(dataset.labels[indices] == label))
                         for label, name in enumerate(dataset.class_names)}
        for number, start in enumerate(range(0, max(len(indices), 1), shard_size)):
            chunk = indices[start:start + shard_size]
            samples = (Sample(key=_key(split, index), image=dataset.images[index],
                              label=int(dataset.labels[index]),
                              meta={"split": split, "class_name": dataset.class_names[
                                  dataset.labels[index]], "source": dataset.sources[index]})
                       for index in chunk)
            shard = write_shard(directory / f"{split}-{number:05d}.tar", samples)
            shards.append({"name": shard.name, "split": split, "count": shard.count,
                           "sha256": shard.sha256})
    (directory / CLASSES_JSON).write_text(dumps_json(dataset.class_names))
    manifest = {
        **info,
        "classes": dataset.class_names,
        "image_shape": list(dataset.images.shape[1:]),
        "counts": counts,
        "shards": shards,
        "skipped": dict(sorted(dataset.skipped.items())),
        "converted": dict(sorted(dataset.converted.items())),
        "few_shot_keys": None if few_shot is None else [_key("train", i) for i in few_shot],
        "digest": digest_of_digests([shard["sha256"] for shard in shards]),
    }
    (directory / MANIFEST_JSON).write_text(dumps_json(manifest))
    return manifest


def _key(split: str, index: int) -> str:
    return f"{split}{index:07d}"


def read_training_images(directory: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The real images models may learn from: the train split, or its few-shot subset if any."""
    images, labels, keys = read_split(directory, "train")
    few_shot = json.loads((directory / MANIFEST_JSON).read_text()).get("few_shot_keys")
    if few_shot is None:
        return images, labels, keys
    wanted = set(few_shot)
    mask = np.array([key in wanted for key in keys])
    return images[mask], labels[mask], [key for key in keys if key in wanted]


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (uint8 N×H×W×C), labels and keys of one split of a `real_images` directory."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    paths = finished_shards(directory, f"{split}-*.tar")
    if not paths:
        raise FileNotFoundError(f"{directory} has no finished {split} shards: materialize "
                                "'real_images' first")
    return load_arrays(paths)


def read_image_shape(directory: Path) -> tuple[int, int, int]:
    """Height, width and channels of the stored real images (every arm trains at this shape)."""
    manifest = json.loads((directory / MANIFEST_JSON).read_text())
    height, width, channels = manifest["image_shape"]
    return int(height), int(width), int(channels)


def read_classes(directory: Path) -> list[str]:
    """The class names of a `real_images` directory, in label order."""
    return list(json.loads((directory / CLASSES_JSON).read_text()))

