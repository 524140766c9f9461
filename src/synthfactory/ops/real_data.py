"""The real dataset: scikit-learn's digits or a user's image folder, split and sharded."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthfactory.ops.atomic import digest_of_digests, dumps_json
from synthfactory.ops.prompts import check_class_names
from synthfactory.ops.seeds import rng
from synthfactory.ops.shards import Sample, finished_shards, load_arrays, write_shard

CLASSES_JSON = "classes.json"
MANIFEST_JSON = "manifest.json"

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DIGIT_NAMES = [str(digit) for digit in range(10)]


@dataclass
class RealDataset:
    """Images (uint8 N×H×W×C), integer labels, class names, and what was skipped while loading."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    converted: Counter[str] = field(default_factory=Counter)  # source mode -> images converted


def list_classes(source: str, root: str | None) -> list[str]:
    """Class names of a source without loading images (cheap: used when definitions load)."""
    if source == "digits":
        return list(DIGIT_NAMES)
    if source == "imagefolder":
        return _imagefolder_classes(Path(root or ""))
    raise ValueError(f"real_images.source {source!r} is not one of digits, imagefolder")


def _imagefolder_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(f"real_images.root {str(root)!r} is not a directory: point it at a "
                                "folder holding one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"real_images.root {str(root)!r} has no class folders: expected "
                         "<root>/<class_name>/<image files>")
    check_class_names(classes)  # blank or look-alike folder names fail here, not in a step
    return classes


def load_digits(resolution: int, channels: int) -> RealDataset:
    """scikit-learn's bundled 8×8 digits (1797 images, values 0..16) as uint8 images."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    resized = np.stack([to_square(Image.fromarray(image), resolution, channels) for image in images])
    return RealDataset(images=resized, labels=digits.target.astype(np.int64),
                       class_names=list(DIGIT_NAMES),
                       sources=[f"digits[{index}]" for index in range(len(images))])


# Modes stored as they are; any other mode (CMYK, 16-bit, alpha, palette, ...) is converted.
NATIVE_MODES = {"L", "RGB"}


def load_imagefolder(root: str, resolution: int, channels: int) -> RealDataset:
    """Every readable image under `<root>/<class>/`, resized; unreadable files are counted, skipped.

    Skipped, counted per reason: files without an image extension, empty files, files no decoder
    recognises, corrupt or truncated images, and images over `PIL.Image.MAX_IMAGE_PIXELS` pixels
    (decompression bombs: checked from the header, before decoding). Images in other modes (CMYK,
    16-bit, alpha, palette) are converted and counted per mode in `converted`. A class left with
    no readable image is an error: it could never be evaluated.
    """
    root_path = Path(root)
    class_names = _imagefolder_classes(root_path)
    images, labels, sources = [], [], []
    skipped: Counter[str] = Counter()
    converted: Counter[str] = Counter()
    for label, name in enumerate(class_names):
        found = 0
        class_skipped: Counter[str] = Counter()
        for path in sorted(p for p in (root_path / name).rglob("*") if p.is_file()):
            reason, image = _read_image(path, resolution, channels)
            if reason is not None:
                class_skipped[reason] += 1
                continue
            array, mode = image
            if mode not in NATIVE_MODES:
                converted[mode] += 1
            images.append(array)
            labels.append(label)
            sources.append(path.relative_to(root_path).as_posix())
            found += 1
        skipped.update(class_skipped)
        if found == 0:
            why = ", ".join(f"{count} {reason}" for reason, count in sorted(class_skipped.items()))
            raise ValueError(f"class {name!r} under real_images.root {root!r} has no readable image"
                             f" (skipped: {why or 'no files'}): add images to it or remove the "
                             "folder")
    return RealDataset(images=np.stack(images), labels=np.asarray(labels, dtype=np.int64),
                       class_names=class_names, sources=sources, skipped=skipped,
                       converted=converted)


def _read_image(path: Path, resolution: int,
                channels: int) -> tuple[str, None] | tuple[None, tuple[np.ndarray, str]]:
    """(reason, None) for a file to skip, else (None, (resized image, source mode))."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file", None
    if path.stat().st_size == 0:
        return "empty file", None
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > Image.MAX_IMAGE_PIXELS:
                return "too large", None
            image.load()
            return None, (to_square(image, resolution, channels), image.mode)
    except Image.DecompressionBombError:
        return "too large", None
    except UnidentifiedImageError:
        return "unrecognised image format", None
    except (OSError, SyntaxError, ValueError):  # what PIL raises on truncated or corrupt data
        return "corrupt image", None


def to_square(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Convert to grey/RGB, centre-crop to a square and resize: uint8 resolution×resolution×C."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # 16/32-bit grey: scale to 8 bits instead of letting PIL clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = max(array.max(), 1.0)
        image = Image.fromarray(np.round(array * (255.0 / peak)).astype(np.uint8))
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white rather than dropping alpha (which shows hidden pixels).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if channels == 1 else array


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class random split: about `test_fraction` of each class goes to test.

    Every class with two or more images keeps at least one in each split.
    """
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng(seed, "real_images", "split", int(label)).permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(test), dtype=np.int64)


def few_shot_subset(labels: np.ndarray, train: np.ndarray, per_class: int,
                    seed: int) -> np.ndarray:
    """`per_class` seeded train indices of each class (all of a class that has fewer)."""
    chosen = []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        order = rng(seed, "real_images", "few_shot", int(label)).permutation(len(members))
        chosen.extend(members[order[:per_class]].tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)


def write_real_images(directory: Path, dataset: RealDataset, train: np.ndarray, test: np.ndarray,
                      shard_size: int, info: dict[str, Any],
                      few_shot: np.ndarray | None = None) -> dict[str, Any]:
    """Write the train/test splits as shards, `classes.json`, and `manifest.json` last.

    Returns the manifest: counts per split and class, the sha256 of every shard, skipped files,
    the keys of the few-shot subset of train (when one is asked for), and a digest over all shards.
    """
    shards = []
    counts: dict[str, dict[str, int]] = {}
    for split, indices in (("train", train), ("test", test)):
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
    if split not in {"train", "test"}:
        raise ValueError(f"split {split!r} is not one of train, test")
    paths = finished_shards(directory, f"{split}-*.tar")
    if not paths:
        raise FileNotFoundError(f"{directory} has no finished {split} shards: materialize "
                                "'real_images' first")
    return load_arrays(paths)


def read_classes(directory: Path) -> list[str]:
    """The class names of a `real_images` directory, in label order."""
    return list(json.loads((directory / CLASSES_JSON).read_text()))

