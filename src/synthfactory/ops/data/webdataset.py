"""The WebDataset source: a user's existing shards, labels from `<key>.cls` or `<key>.json`.

Shards are untrusted input: member names are checked before anything is read, and samples
without an image or a label are skipped and counted.
"""

from __future__ import annotations

import glob
import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from synthfactory.ops.data.images import ImageCollector, RealDataset, decode_image
from synthfactory.ops.data.prompts import check_class_names

WEBDATASET_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp")


def webdataset_classes(root: str) -> list[str]:
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
    collected = ImageCollector()
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


def webdataset_label_counts(root: str, class_names: list[str]) -> Counter[int]:
    """Samples per label of WebDataset shards, without reading or decoding any image.

    Counts what `load_webdataset` would keep if every image decoded: samples with an image member
    and a valid label (the small `.cls`/`.json` members are the only ones read). The CLI's
    preflight uses it to refuse a class with too few images before anything is decoded.
    """
    index = {name: label for label, name in enumerate(class_names)}
    counts: Counter[int] = Counter()
    for tar_path in resolve_shards(root):
        for _, parts in _tar_samples(tar_path, read_images=False):
            if any(ext in parts for ext in WEBDATASET_IMAGE_EXTENSIONS):
                label, _ = _webdataset_label(parts, index)
                if label is not None:
                    counts[label] += 1
    return counts


def _tar_samples(tar_path: Path, read_images: bool = True
                 ) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of consecutive members sharing a key, checked for safety.

    With `read_images` false only the label members (`cls`, `json`) are read; the others are
    present with empty bytes (counting samples needs no image).
    """
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
            ext = ext.lower()
            if not read_images and ext not in ("cls", "json"):
                parts[ext] = b""
                continue
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file always has a handle
            parts[ext] = handle.read()
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

