"""Leases on a local disk or an fsspec object store: two runs that write the same unit take turns.

A lease is a small JSON record naming its holder (host, pid, token) and an expiry. Exactly one
writer creates it:

- on a local disk with `os.open(O_CREAT | O_EXCL)` (fsspec's `pipe_file(mode="create")` is
  "check, then write" there, and two racing processes both got it);
- on an object store with a conditional write (`pipe_file(mode="create")`: S3's
  `If-None-Match: *`), which the store itself makes exclusive.

While held, a heartbeat thread pushes the expiry forward, so a long write keeps its lease, and a
crashed writer's lease expires `ttl` seconds after its last heartbeat. The next writer then breaks
it. On a local disk breakers take turns through an O_EXCL guard file, and the lease is removed
only if it is still the very file (inode, mtime, size) that was judged expired.
A lease that is empty or unreadable (a writer killed between creating and writing it) counts as
expired once it is older than `ttl`. A writer that cannot get the lease within `wait` seconds
fails with `LeaseTimeout`, naming the holder and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# A lease lives this long without a heartbeat; the heartbeat renews it every third of that.
DEFAULT_TTL_S = 120.0
# How long a writer waits for another writer of the same unit before failing.
DEFAULT_WAIT_S = 3600.0
# A breakers' guard older than this was left by a breaker that died while breaking.
GUARD_STALE_S = 30.0


class LeaseTimeout(TimeoutError):
    """Another writer held the lease for longer than this one would wait."""


@dataclass(frozen=True)
class _Seen:
    """A lease as one reader saw it: its record (None: empty or unreadable) and how old the file
    is (seconds since its last write), plus the local file's identity, to break exactly it."""

    record: dict[str, Any] | None
    age_s: float
    identity: tuple[int, int, int, int] | None = None  # (st_dev, st_ino, st_mtime_ns, st_size)

    def expired(self, ttl: float, now: float) -> bool:
        """Past its recorded expiry; or, without a readable record, older than the lease ttl."""
        if self.record is None:
            return self.age_s > ttl
        expires = self.record.get("expires")
        if not isinstance(expires, (int, float)):
            return self.age_s > ttl  # a record without a valid expiry: judged by its age
        return expires < now


def is_local(fs: Any) -> bool:
    """True when `fs` is fsspec's local filesystem (the lease then uses O_EXCL and rename)."""
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def _parse(data: bytes) -> dict[str, Any] | None:
    """A lease record, or None when the bytes are empty or not a JSON object."""
    try:
        value = json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class _LocalLeaseFile:
    """The local-disk operations of a lease at `path` (a plain path, no protocol)."""

    def __init__(self, path: str):
        self.path = path

    def create(self, record: dict[str, Any]) -> bool:
        """Create the lease exclusively with `record`; False when it already exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def read(self) -> _Seen | None:
        """The lease as it is now; None when there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            stat = os.fstat(fd)
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        identity = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return _Seen(_parse(data), time.time() - stat.st_mtime, identity)

    def renew(self, record: dict[str, Any]) -> None:
        """Replace the record atomically (a temporary file renamed over it: never empty)."""
        temp = f"{self.path}.renew-{uuid.uuid4().hex}"
        with open(temp, "wb") as handle:
            handle.write(json.dumps(record).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    def remove_if(self, seen: _Seen, token: str | None) -> bool:
        """Remove the lease if it is still the very file seen (`seen.identity`: inode, mtime and
        size; a renewal or a new holder's lease is another file). Breakers take turns through
        a guard file created with O_EXCL (`<lease>.breaking`), so the check and the removal
        cannot interleave with another breaker's: without it, two writers that both judged the
        same dead lease could each remove "it", the second removing the lease a third writer
        had created in between, and two writers held it at once (seen in the tests, 2026-12-07,
        with an earlier rename-check-put-back scheme). Creators need no guard: O_EXCL cannot
        create over a lease that exists. `token` is unused here (a local lease has an
        identity). True when this call removed it; False when another breaker is at work or
        the lease changed."""
        guard = f"{self.path}.breaking"
        if not self._take_guard(guard):
            return False
        try:
            current = self.read()
            if current is None or current.identity != seen.identity:
                return False  # released, broken or renewed meanwhile: nothing to break
            os.unlink(self.path)
            return True
        finally:
            os.unlink(guard)

    @staticmethod
    def _take_guard(guard: str) -> bool:
        """Create the breakers' guard exclusively; a guard older than `GUARD_STALE_S` (a breaker
        killed while breaking, which takes microseconds) is removed first, by one remover (a
        rename to a unique name). False when another breaker holds it."""
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            pass
        try:
            stale = time.time() - os.stat(guard).st_mtime > GUARD_STALE_S
        except FileNotFoundError:
            return False  # its breaker just finished: the caller tries again
        if stale:
            try:
                taken = f"{guard}.stale-{uuid.uuid4().hex}"
                os.rename(guard, taken)
                os.unlink(taken)
            except FileNotFoundError:
                pass
        return False


class _RemoteLeaseFile:
    """The object-store operations of a lease at `path` on filesystem `fs`."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path

    def create(self, record: dict[str, Any]) -> bool:
        """A conditional create (`If-None-Match: *` on S3); False when it already exists."""
        try:
            self.fs.pipe_file(self.path, json.dumps(record).encode(), mode="create")
        except FileExistsError:
            return False
        return True

    def read(self) -> _Seen | None:
        """The lease as it is now; None when there is none."""
        try:
            data = self.fs.cat_file(self.path)
            modified = self.fs.modified(self.path).timestamp()
        except FileNotFoundError:
            return None
        return _Seen(_parse(data), time.time() - modified)

    def renew(self, record: dict[str, Any]) -> None:
        """Overwrite the record (an object store replaces an object atomically)."""
        self.fs.pipe_file(self.path, json.dumps(record).encode())

    def remove_if(self, seen: _Seen, token: str | None) -> bool:
        """Delete the lease if it still holds the record seen. Object stores have no rename:
        this is a re-read then a delete, so a lease created in the instant between the two could
        be removed (its holder then finds its token gone on its next renewal)."""
        current = self.read()
        if current is None:
            return False
        if token is not None:
            if current.record is None or current.record.get("token") != token:
                return False
        elif current.record != seen.record:
            return False
        self.fs.rm(self.path)
        return True


def _describe(seen: _Seen, path: str, ttl: float, wait: float) -> str:
    """Why a writer gave up, and what to do: a live holder, or a lease that is not readable."""
    if seen.record is None:
        return (f"{path} exists but is empty or unreadable (a writer killed while creating it); it "
                f"counts as expired {ttl:.0f}s after it was written ({seen.age_s:.0f}s ago); no "
                f"writer could take it within {wait:.0f}s: delete {path} if no run writes this unit")
    holder = f"{seen.record.get('host', '?')} pid {seen.record.get('pid', '?')}"
    return (f"{path} is held by {holder} (another run writing the same unit), renewed by its "
            f"heartbeat, and was not released within {wait:.0f}s; it is released when that run "
            f"ends, or {ttl:.0f}s after its holder stops renewing it (a crashed run); if that run "
            f"is stuck, stop it (or delete {path})")


@contextmanager
def lease(fs: Any, path: str, *, ttl: float = DEFAULT_TTL_S,
          wait: float = DEFAULT_WAIT_S) -> Iterator[dict[str, Any]]:
    """Hold the lease at `path` (on filesystem `fs`) for the duration of the block.

    `wait` 0 makes a single attempt (`LeaseTimeout` when another writer holds it)."""
    if ttl <= 0:
        raise ValueError(f"lease ttl {ttl!r}: give a positive number of seconds")
    token = uuid.uuid4().hex
    holder = {"token": token, "host": socket.gethostname(), "pid": os.getpid()}
    if is_local(fs):
        plain = fs._strip_protocol(path)
        os.makedirs(os.path.dirname(plain) or ".", exist_ok=True)
        handle: _LocalLeaseFile | _RemoteLeaseFile = _LocalLeaseFile(plain)
    else:
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            fs.makedirs(parent, exist_ok=True)
        handle = _RemoteLeaseFile(fs, path)
    deadline = time.monotonic() + wait
    while True:
        if handle.create({**holder, "expires": time.time() + ttl}):
            break
        seen = handle.read()
        if seen is None:
            continue  # released meanwhile: try again at once
        # The holder stopped renewing (it crashed) or never wrote its record: break exactly
        # that lease; whoever then creates the path first holds it. A break that did not happen
        # (another writer is breaking it, or it changed) waits like a live holder.
        if seen.expired(ttl, time.time()) and handle.remove_if(
                seen, seen.record.get("token") if seen.record else None):
            continue
        if time.monotonic() >= deadline:
            raise LeaseTimeout(_describe(seen, path, ttl, wait))
        time.sleep(0.05 + random.random() * 0.2)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            current = handle.read()
            if current is None or not current.record or current.record.get("token") != token:
                return  # broken by another writer (this one stalled past ttl): nothing to renew
            try:
                handle.renew({**holder, "expires": time.time() + ttl})
            except OSError as error:  # a transient store error: the next beat tries again
                if getattr(error, "errno", None) == errno.ENOENT:
                    return
    heartbeat = threading.Thread(target=renew, name=f"lease {path}", daemon=True)
    heartbeat.start()
    try:
        yield holder
    finally:
        stop.set()
        heartbeat.join()
        current = handle.read()
        if current is not None and current.record and current.record.get("token") == token:
            handle.remove_if(current, token)
