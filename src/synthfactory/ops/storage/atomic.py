"""Atomic publication of files and directories: write a temporary sibling, then rename.

A crashed run leaves at most a `.tmp-*` sibling behind, never something under its final name.
A temporary name carries its writer (host, pid, process start time), so the next writer removes
only temporaries of writers that are provably dead, never those of a live writer of the same
output.
A write that runs out of space fails with `DiskFullError`, naming the path, and the previous
output under the final name stays as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


# A temporary file of a writer on another host (whose processes cannot be checked from here),
# or of an older synthfactory (whose names carry no writer), is removed only when it is older
# than this: no write of one unit takes a day.
STALE_TEMP_AGE_S = 24 * 3600.0


@dataclass(frozen=True)
class Writer:
    """Who wrote a temporary file: host, process id and the process's start time (clock ticks
    since boot, from /proc; 0 where unknown), so a reused pid is not taken for its writer."""

    host: str
    pid: int
    started: int

    def token(self) -> str:
        """`host~pid~started`: the part of a temporary name that names its writer."""
        return f"{self.host}~{self.pid}~{self.started}"

    @classmethod
    def parse(cls, token: str) -> Writer | None:
        """The writer a `token()` names; None for a name without one (an older format)."""
        parts = token.split("~")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))

    def is_dead(self) -> bool:
        """True only when provably dead: on this host, and its pid is gone or now belongs to a
        process started at another time (a reused pid). A writer on another host is never
        provably dead from here."""
        if self.host != current_writer().host:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
        started = process_start_ticks(self.pid)
        return bool(self.started and started and started != self.started)


def process_start_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (Linux /proc); 0 where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Field 22 (starttime); the name (field 2) may hold spaces, so split after its last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else 0


_CURRENT: Writer | None = None


def current_writer() -> Writer:
    """This process as a writer (cached; recomputed after a fork, whose pid differs)."""
    global _CURRENT
    if _CURRENT is None or _CURRENT.pid != os.getpid():
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
        _CURRENT = Writer(host, os.getpid(), process_start_ticks(os.getpid()))
    return _CURRENT


def temp_sibling(final: Path) -> Path:
    """A unique temporary path in the same directory as `final` (so the rename is atomic):
    `.tmp-<name>.<host>~<pid>~<start>.<random>`, naming its writer for `remove_stale_temps`."""
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{current_writer().token()}."
                           f"{uuid.uuid4().hex[:8]}")


def temp_writer(temp: Path, final: Path) -> Writer | None:
    """The writer named in a temporary sibling of `final`; None when its name names none."""
    rest = temp.name[len(f"{TEMP_PREFIX}{final.name}."):]
    token, _, _ = rest.rpartition(".")
    return Writer.parse(token) if token else None


def remove_stale_temps(final: Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the temporaries that dead writers of `final` left behind; return what was removed.

    Only `final`'s own temporaries are looked at, so writers of other files in the same
    directory (other partitions, written in parallel) are not disturbed; and of those only the
    ones whose writer is provably dead (this host, its process gone) or, when that cannot be
    known (another host, a name without a writer), older than `max_age_s`. A live writer's
    temporary file is never removed: two writers of one output no longer break each other.
    """
    removed = []
    now = time.time()
    for stale in final.parent.glob(f"{TEMP_PREFIX}{final.name}.*"):
        writer = temp_writer(stale, final)
        try:
            age = now - stale.lstat().st_mtime
        except FileNotFoundError:
            continue  # its writer renamed or removed it meanwhile
        if writer == current_writer():
            continue  # this process's own (a retired directory being removed, say)
        if not ((writer is not None and writer.is_dead()) or age > max_age_s):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, onerror=_gone_is_fine)  # another remover may race us to it
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _gone_is_fine(function: Any, path: str, exc_info: Any) -> None:
    """`shutil.rmtree`'s error handler: a file already removed (by a concurrent remover of the
    same dead writer's temporary) is fine; any other error is raised."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


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
