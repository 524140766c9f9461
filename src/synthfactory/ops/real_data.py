"""The real dataset: scikit-learn's digits or a user's image folder, split and sharded."""

from __future__ import annotations

import glob
import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthfactory.ops.atomic import digest_of_digests, dumps_json
from synthfactory.ops.prompts import check_class_names
from synthfactory.ops.seeds import rng
from synthfactory.ops.shards import Sample, finished_shards, load_arrays, write_shard

CLASSES_JSON = "classes.json"
MANIFEST_JSON = "manifest.json"
# Modes stored as they are; any other mode (CMYK, 16-bit, alpha, palette, ...) is converted.
NATIVE_MODES = {"L", "RGB"}

SOURCES = ("digits", "imagefolder", "webdataset")
WEBDATASET_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DIGIT_NAMES = [str(digit) for digit in range(10)]
# What decoding one image gives: (why it is skipped, None) or (None, (image, its source mode)).
Decoded = tuple[str, None] | tuple[None, tuple[np.ndarray, str]]


@dataclass
class RealDataset:
    """Images (uint8 N×H×W×C), integer labels, class names, and what was skipped while loading."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    converted: Counter[str] = field(default_factory=Counter)  # source mode -> images converted


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
        return list(class_names)
    if source == "digits":
        return list(DIGIT_NAMES)
    if source == "imagefolder":
        return _imagefolder_classes(Path(root or ""))
    return _webdataset_classes(root or "")


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


def _webdataset_classes(root: str) -> list[str]:
    """Class names from `classes.txt` (one per line) or `classes.json` (a list) beside the shards."""
    folder = resolve_shards(root)[0].parent
    for name in ("classes.txt", "classes.json"):
        path = folder / name
        if path.is_file():
            text = path.read_text()
            names = (json.loads(text) if name.endswith(".json")
                     else [line.strip() for line in text.splitlines() if line.strip()])
            if not isinstance(names, list):
                raise ValueError(f"{path} must hold a JSON list of class names")
            check_class_names([str(n) for n in names])
            return [str(n) for n in names]
    raise ValueError(f"real_images.root {root!r}: no classes.txt or classes.json beside the "
                     "shards; list the classes in real_images.class_names (label order)")


def resolve_shards(root: str) -> list[Path]:
    """The tar files of a WebDataset root: a directory, a glob, a brace pattern or one file."""
    from braceexpand import braceexpand

    if Path(root).is_dir():
        paths = sorted(Path(root).glob("*.tar"))
    elif any(char in root for char in "*?["):
        paths = sorted(Path(p) for p in glob.glob(root))
    else:
        paths = [Path(p) for p in braceexpand(root)]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        problem = f"missing shards {missing[:3]}" if missing else "no .tar shards found"
        raise FileNotFoundError(f"real_images.root {root!r}: {problem}; give a directory of .tar "
                                "files, a glob or a brace pattern")
    return paths


def safe_member_name(tar_path: Path, member: tarfile.TarInfo) -> str:
    """The member's name if it is a plain relative file; an error for anything that could escape.

    A user's shard is untrusted: absolute names, `..` components, links and devices are refused
    before anything is read (nothing is ever extracted to disk, but a name is still a key).
    """
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or PureWindowsPath(name).drive:
        raise ValueError(f"{tar_path}: member {name!r} has an absolute path or '..'; refusing "
                         "this shard (rebuild it with relative member names)")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"{tar_path}: member {name!r} is a link or device, not a file; refusing "
                         "this shard")
    return name


class _Collected:
    """Images accepted so far with their labels and sources; skips and conversions counted."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.labels: list[int] = []
        self.sources: list[str] = []
        self.skipped: Counter[str] = Counter()
        self.converted: Counter[str] = Counter()

    def add(self, decoded: Decoded, label: int, source: str) -> bool:
        """Keep a decoded image (counting a converted mode), or count why it was skipped."""
        reason, image = decoded
        if image is None:
            self.skipped[str(reason)] += 1
            return False
        array, mode = image
        if mode not in NATIVE_MODES:
            self.converted[mode] += 1
        self.images.append(array)
        self.labels.append(label)
        self.sources.append(source)
        return True

    def dataset(self, class_names: list[str]) -> RealDataset:
        """The collected images as a dataset."""
        return RealDataset(images=np.stack(self.images),
                           labels=np.asarray(self.labels, dtype=np.int64),
                           class_names=class_names, sources=self.sources,
                           skipped=self.skipped, converted=self.converted)


def load_webdataset(root: str, resolution: int, channels: int,
                    class_names: list[str]) -> RealDataset:
    """Every sample of WebDataset shards with an image and a label, resized; bad samples counted.

    A sample is the members sharing a key (`<key>.<ext>`); the image is its png/jpg/jpeg/webp/bmp
    member, the label its `.cls` (an integer) or `.json` (`label` integer or `class_name`).
    Samples without image or label, labels outside `class_names` and images `decode_image`
    refuses are skipped and counted per reason; other modes are converted and counted; a class
    left with no image is an error.
    """
    index = {name: label for label, name in enumerate(class_names)}
    collected = _Collected()
    for tar_path in resolve_shards(root):
        for key, parts in _tar_samples(tar_path):
            image_ext = next((ext for ext in WEBDATASET_IMAGE_EXTENSIONS if ext in parts), None)
            if image_ext is None:
                collected.skipped["sample without an image"] += 1
                continue
            label, reason = _webdataset_label(parts, index)
            if label is None:
                collected.skipped[reason] += 1
                continue
            data = parts[image_ext]
            decoded = (("empty file", None) if not data
                       else decode_image(io.BytesIO(data), resolution, channels))
            collected.add(decoded, label, f"{tar_path.name}:{key}")
    counts = Counter(collected.labels)
    empty = [name for label, name in enumerate(class_names) if counts[label] == 0]
    if empty:
        raise ValueError(f"classes {empty[:5]} have no readable image in real_images.root "
                         f"{root!r}; check the labels or real_images.class_names")
    return collected.dataset(list(class_names))


def _tar_samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of consecutive members sharing a key, checked for safety."""
    with tarfile.open(tar_path, "r") as tar:
        current: str | None = None
        parts: dict[str, bytes] = {}
        for member in tar:
            name = safe_member_name(tar_path, member)
            if member.isdir():
                continue
            folder, _, base = name.rpartition("/")
            stem, _, ext = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            if current is not None and key != current:
                yield current, parts
                parts = {}
            current = key
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file always has a handle
            parts[ext.lower()] = handle.read()
        if current is not None:
            yield current, parts


def _webdataset_label(parts: dict[str, bytes], index: dict[str, int]) -> tuple[int | None, str]:
    """The label of a sample from `.cls` or `.json`, or (None, the reason it has none)."""
    if "cls" in parts:
        text = parts["cls"].decode("utf-8", "replace").strip()
        if not text.lstrip("-").isdigit():
            return None, "label is not an integer"
        label = int(text)
    elif "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except ValueError:
            return None, "unreadable json"
        if isinstance(meta, dict) and isinstance(meta.get("label"), int):
            label = meta["label"]
        elif isinstance(meta, dict) and str(meta.get("class_name")) in index:
            return index[str(meta["class_name"])], ""
        else:
            return None, "label not in class_names"
    else:
        return None, "sample without a label"
    if not 0 <= label < len(index):
        return None, "label not in class_names"
    return label, ""


def load_real(source: str, root: str | None, resolution: int, channels: int,
              class_names: list[str]) -> RealDataset:
    """The images of one source (digits, imagefolder or webdataset) for the given classes."""
    if source == "digits":
        return load_digits(resolution, channels)
    if source == "imagefolder":
        return load_imagefolder(str(root), resolution, channels, class_names)
    return load_webdataset(str(root), resolution, channels, class_names)


def concatenate(first: RealDataset, second: RealDataset) -> RealDataset:
    """Two datasets with the same classes as one (e.g. a separate test set after the train set)."""
    if first.class_names != second.class_names:
        raise ValueError(f"the test set's classes {second.class_names[:5]} differ from the train "
                         f"set's {first.class_names[:5]}")
    return RealDataset(images=np.concatenate([first.images, second.images]),
                       labels=np.concatenate([first.labels, second.labels]),
                       class_names=first.class_names, sources=first.sources + second.sources,
                       skipped=first.skipped + second.skipped,
                       converted=first.converted + second.converted)


def load_digits(resolution: int, channels: int) -> RealDataset:
    """scikit-learn's bundled 8×8 digits (1797 images, values 0..16) as uint8 images."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    resized = np.stack([to_square(Image.fromarray(image), resolution, channels) for image in images])
    return RealDataset(images=resized, labels=digits.target.astype(np.int64),
                       class_names=list(DIGIT_NAMES),
                       sources=[f"digits[{index}]" for index in range(len(images))])


def load_imagefolder(root: str, resolution: int, channels: int,
                     class_names: list[str] | None = None) -> RealDataset:
    """Every readable image under `<root>/<class>/`, resized; unreadable files are counted, skipped.

    `class_names` picks (and orders) the class folders; by default every sub-folder, sorted.
    Skipped, counted per reason: files without an image extension, empty files, files no decoder
    recognises, corrupt or truncated images, and images over `PIL.Image.MAX_IMAGE_PIXELS` pixels
    (decompression bombs: checked from the header, before decoding). Images in other modes (CMYK,
    16-bit, alpha, palette) are converted and counted per mode in `converted`. A class left with
    no readable image is an error: it could never be evaluated.
    """
    root_path = Path(root)
    available = _imagefolder_classes(root_path)
    class_names = list(class_names or available)
    missing = [name for name in class_names if name not in available]
    if missing:
        raise ValueError(f"real_images.class_names {missing[:5]} have no folder under "
                         f"real_images.root {root!r}")
    collected = _Collected()
    for label, name in enumerate(class_names):
        skipped_before = Counter(collected.skipped)
        found = sum(collected.add(_read_image(path, resolution, channels), label,
                                  path.relative_to(root_path).as_posix())
                    for path in sorted(p for p in (root_path / name).rglob("*") if p.is_file()))
        if found == 0:
            class_skipped = collected.skipped - skipped_before
            why = ", ".join(f"{count} {reason}" for reason, count in sorted(class_skipped.items()))
            raise ValueError(f"class {name!r} under real_images.root {root!r} has no readable image"
                             f" (skipped: {why or 'no files'}): add images to it or remove the "
                             "folder")
    return collected.dataset(class_names)


def _read_image(path: Path, resolution: int,
                channels: int) -> Decoded:
    """(reason, None) for a file to skip, else (None, (resized image, source mode))."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file", None
    if path.stat().st_size == 0:
        return "empty file", None
    return decode_image(path, resolution, channels)


def decode_image(source: Path | IO[bytes], resolution: int,
                 channels: int) -> Decoded:
    """Decode an image file or stream: (reason, None) to skip it, else (None, (image, mode)).

    Reasons: `too large` (over `PIL.Image.MAX_IMAGE_PIXELS`, checked from the header before
    decoding), `unrecognised image format`, `corrupt image`.
    """
    try:
        with Image.open(source) as image:
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


def read_image_shape(directory: Path) -> tuple[int, int, int]:
    """Height, width and channels of the stored real images (every arm trains at this shape)."""
    manifest = json.loads((directory / MANIFEST_JSON).read_text())
    height, width, channels = manifest["image_shape"]
    return int(height), int(width), int(channels)


def read_classes(directory: Path) -> list[str]:
    """The class names of a `real_images` directory, in label order."""
    return list(json.loads((directory / CLASSES_JSON).read_text()))

