"""WebDataset shards: deterministic tar writing, reading, and the sidecar that marks one finished.

A shard `NAME.tar` holds samples as `<key>.png`, `<key>.json`, `<key>.cls` members. Its sidecar
`NAME.json` (sample count, keys, sha256 of the tar) is written after the tar is in place, so a
shard without a sidecar, or whose bytes no longer match it, is not finished.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthfactory.ops.storage.atomic import atomic_file, dumps_json, sha256_file, write_json_atomic

# Fixed tar metadata: the same samples always give the same bytes.
_TAR_MTIME = 0
_PNG_COMPRESS_LEVEL = 6
# The ustar format (plain, portable tars) holds member names of at most 100 bytes.
_MAX_MEMBER_NAME = 100


@dataclass(frozen=True)
class Sample:
    """One image with its label and metadata, as stored in a shard."""

    key: str
    image: np.ndarray  # uint8, H×W (grey) or H×W×3 (RGB)
    label: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardInfo:
    """The sidecar of a finished shard."""

    name: str
    count: int
    sha256: str
    keys: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The sidecar as a JSON-ready dict."""
        return {"name": self.name, "count": self.count, "sha256": self.sha256, "keys": self.keys,
                **self.extra}


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey (H×W) or RGB (H×W×3) image, byte-identical for equal input."""
    if image.dtype != np.uint8:
        raise ValueError(f"images are stored as uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 array of a PNG: H×W for grey, H×W×3 for colour."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L" if image.mode in {"L", "I;16", "1"} else "RGB"))


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = 0o444
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, samples: Iterable[Sample]) -> list[str]:
    """Write samples to a tar at `path` (not atomic: see `write_shard`); return their keys.

    Samples are streamed: only one is held in memory at a time.
    """
    keys: list[str] = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            if "." in sample.key or "/" in sample.key or not sample.key:
                raise ValueError(f"sample key {sample.key!r} must be non-empty without '.' or '/' "
                                 "(WebDataset splits member names at the first dot)")
            if len(f"{sample.key}.json".encode()) > _MAX_MEMBER_NAME:
                raise ValueError(f"sample key {sample.key!r} is too long for a tar member name: "
                                 f"at most {_MAX_MEMBER_NAME - 5} bytes in UTF-8")
            _add_member(tar, f"{sample.key}.png", encode_png(sample.image))
            _add_member(tar, f"{sample.key}.json", dumps_json(sample.meta).encode())
            _add_member(tar, f"{sample.key}.cls", str(sample.label).encode())
            keys.append(sample.key)
    return keys


def sidecar_path(tar_path: Path) -> Path:
    """`NAME.tar` → `NAME.json`."""
    return tar_path.with_suffix(".json")


def write_shard(tar_path: Path, samples: Iterable[Sample],
                extra: dict[str, Any] | None = None) -> ShardInfo:
    """Atomically publish a shard: the tar under a temporary name, renamed, then its sidecar.

    A previous shard stays finished (tar and sidecar) until the new tar is complete on disk: a
    rewrite that fails (a crash in the generator, a full disk) leaves the previous good shard in
    place. Its sidecar is removed just before the rename, so new bytes are never paired with an
    old sidecar.
    """
    sidecar = sidecar_path(tar_path)
    with atomic_file(tar_path) as temp:
        keys = write_tar(temp, samples)
        with open(temp, "rb") as handle:  # the new bytes are on disk before the old shard goes
            os.fsync(handle.fileno())
        sidecar.unlink(missing_ok=True)
    info = ShardInfo(name=tar_path.name, count=len(keys), sha256=sha256_file(tar_path), keys=keys,
                     extra=extra or {})
    write_json_atomic(sidecar, info.to_json())
    return info


def shard_is_current(tar_path: Path, extra: dict[str, Any]) -> bool:
    """True when the shard is finished, intact, and was written from exactly these inputs.

    `extra` is what `write_shard` would record (generator and inputs digests): a shard whose
    sidecar carries the same values and whose bytes still match it need not be written again,
    because writing it again would give the same bytes. This is how a rerun after a crash
    completes only the missing shards.
    """
    info = read_shard_info(tar_path)
    if info is None or any(info.extra.get(key) != value for key, value in extra.items()):
        return False
    return verify_shard(tar_path) == []


def read_shard_info(tar_path: Path) -> ShardInfo | None:
    """The sidecar of a shard, or None when the shard is not finished."""
    sidecar = sidecar_path(tar_path)
    if not (tar_path.exists() and sidecar.exists()):
        return None
    data = json.loads(sidecar.read_text())
    known = {"name", "count", "sha256", "keys"}
    return ShardInfo(name=data["name"], count=data["count"], sha256=data["sha256"], keys=data["keys"],
                     extra={k: v for k, v in data.items() if k not in known})


def verify_shard(tar_path: Path) -> list[str]:
    """Problems with a shard (missing sidecar, sha256 or count mismatch); empty when intact."""
    info = read_shard_info(tar_path)
    if info is None:
        return [f"{tar_path.name}: not finished (tar or sidecar missing)"]
    problems = []
    actual = sha256_file(tar_path)
    if actual != info.sha256:
        problems.append(f"{tar_path.name}: sha256 {actual[:12]}… does not match the sidecar "
                        f"{info.sha256[:12]}…")
    else:
        count = sum(1 for _ in read_samples([tar_path]))
        if count != info.count:
            problems.append(f"{tar_path.name}: {count} samples, sidecar says {info.count}")
    return problems


def read_samples(tar_paths: Iterable[Path], decode: bool = True) -> Iterator[Sample]:
    """Samples of the given shards in order. With `decode=False` images stay empty (fast scans)."""
    for tar_path in tar_paths:
        with tarfile.open(tar_path, "r") as tar:
            current: str | None = None
            parts: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if current is not None and key != current:
                    yield _sample_from_parts(current, parts, decode, tar_path)
                    parts = {}
                current = key
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has a handle
                parts[ext] = handle.read()
            if current is not None:
                yield _sample_from_parts(current, parts, decode, tar_path)


def _sample_from_parts(key: str, parts: dict[str, bytes], decode: bool, tar_path: Path) -> Sample:
    missing = {"png", "cls"} - parts.keys()
    if missing:
        raise ValueError(f"{tar_path}: sample {key!r} has no {sorted(missing)} member")
    image = decode_png(parts["png"]) if decode else np.zeros((0, 0), np.uint8)
    meta = json.loads(parts["json"]) if "json" in parts else {}
    return Sample(key=key, image=image, label=int(parts["cls"]), meta=meta)


def finished_shards(directory: Path, pattern: str = "*.tar") -> list[Path]:
    """The finished shards (tar + sidecar) of a directory, sorted by name."""
    return sorted(p for p in directory.glob(pattern) if sidecar_path(p).exists())


def load_arrays(tar_paths: Iterable[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images of some shards stacked as uint8 N×H×W×C, their labels and keys."""
    images, labels, keys = [], [], []
    for sample in read_samples(tar_paths):
        image = sample.image if sample.image.ndim == 3 else sample.image[:, :, None]
        images.append(image)
        labels.append(sample.label)
        keys.append(sample.key)
    if not images:
        raise ValueError("no samples in the given shards")
    return np.stack(images), np.asarray(labels, dtype=np.int64), keys
