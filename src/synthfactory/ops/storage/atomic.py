"""Atomic publication of files and directories: write a temporary sibling, then rename.

A crashed run leaves at most a `.tmp-*` sibling behind, never something under its final name.
A write that runs out of space fails with `DiskFullError`, naming the path, and the previous
output under the final name stays as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"
# Write errors that mean "no room": a full disk, a full quota, a file-size limit (RLIMIT_FSIZE).
_NO_ROOM = {errno.ENOSPC: "the disk is full (no space left on device)",
            errno.EDQUOT: "the disk quota is exhausted",
            errno.EFBIG: "the file size limit was reached (EFBIG)"}


class DiskFullError(OSError):
    """Publishing an output ran out of space; the message names the path and what to do."""


def _no_room(error: OSError, final: Path) -> OSError:
    """`error` as a `DiskFullError` naming `final` when it means "no room", else `error` itself."""
    if isinstance(error, DiskFullError) or error.errno not in _NO_ROOM:
        return error
    return DiskFullError(error.errno, f"cannot write {final}: {_NO_ROOM[error.errno]}; free space "
                         f"under {final.parent} and run again (the previous {final.name}, if "
                         "any, is untouched)")


def temp_sibling(final: Path) -> Path:
    """A unique temporary path in the same directory as `final` (so the rename is atomic)."""
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{uuid.uuid4().hex[:8]}")


def remove_stale_temps(final: Path) -> list[Path]:
    """Delete the temporaries a killed writer of `final` left behind; return what was removed.

    Only `final`'s own temporaries go, so writers of other files in the same directory (other
    partitions, written in parallel) are not disturbed.
    """
    removed = []
    for stale in final.parent.glob(f"{TEMP_PREFIX}{final.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and rename it onto `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    temp = temp_sibling(final)
    try:
        yield temp
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
    except OSError as error:
        raise _no_room(error, final) from error
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it replaces `final` as a whole.

    The previous `final` (if any) stays in place until the new one is complete.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    temp = temp_sibling(final)
    temp.mkdir()
    try:
        try:
            yield temp
        except OSError as error:
            raise _no_room(error, final) from error
        if final.exists():
            retired = temp_sibling(final)
            os.replace(final, retired)
            os.replace(temp, final)
            shutil.rmtree(retired)
        else:
            os.replace(temp, final)
    finally:
        if temp.exists():
            shutil.rmtree(temp)


def write_json_atomic(path: Path, value: Any) -> None:
    """Write `value` as indented, key-sorted JSON, atomically."""
    with atomic_file(path) as temp:
        temp.write_text(dumps_json(value))


def dumps_json(value: Any) -> str:
    """The project's one JSON text format: indented, keys sorted, trailing newline."""
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(directory: Path) -> str:
    """Hex sha256 over every file of a directory: relative paths and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def digest_of_digests(parts: list[str]) -> str:
    """sha256 of a list of digests, in order: the digest of a set of shards."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
