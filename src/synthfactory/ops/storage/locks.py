"""Leases on an fsspec filesystem: two runs that write the same unit take turns.

A lease is a small JSON object created with an exclusive write (`pipe_file(mode="create")`:
S3's `If-None-Match: *`, O_EXCL on a local disk), so exactly one writer gets it. It names its
holder (host, pid, token) and an expiry; while held, a heartbeat thread pushes the expiry
forward, so a long write keeps it and a crashed writer's lease expires after `ttl` seconds and is
then broken by the next writer. A writer that cannot get the lease within `wait` seconds fails,
naming the holder and what to do.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# A lease lives this long without a heartbeat; the heartbeat renews it every third of that.
DEFAULT_TTL_S = 120.0
# How long a writer waits for another writer of the same unit before failing.
DEFAULT_WAIT_S = 3600.0


class LeaseTimeout(TimeoutError):
    """Another writer held the lease for longer than this one would wait."""


def _read(fs: Any, path: str) -> dict[str, Any] | None:
    """The lease record at `path`; None when there is none, {} while it is being written."""
    try:
        return json.loads(fs.cat_file(path).decode() or "{}")
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # created but not yet written (a local create is not atomic with its bytes)


@contextmanager
def lease(fs: Any, path: str, *, ttl: float = DEFAULT_TTL_S,
          wait: float = DEFAULT_WAIT_S) -> Iterator[dict[str, Any]]:
    """Hold the lease at `path` (on filesystem `fs`) for the duration of the block."""
    token = uuid.uuid4().hex
    holder = {"token": token, "host": socket.gethostname(), "pid": os.getpid()}
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.makedirs(parent, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        record = {**holder, "expires": time.time() + ttl}
        try:
            fs.pipe_file(path, json.dumps(record).encode(), mode="create")
            break
        except FileExistsError:
            pass
        held = _read(fs, path)
        if held is None:
            continue  # released meanwhile: try again at once
        if held and held.get("expires", float("inf")) < time.time():
            # The holder stopped renewing (it crashed): break its lease, unless it changed.
            again = _read(fs, path)
            if again and again.get("token") == held.get("token"):
                fs.rm(path)
            continue
        if time.monotonic() > deadline:
            raise LeaseTimeout(
                f"{path} is held by {held.get('host', '?')} pid {held.get('pid', '?')} (another run "
                f"writing the same unit) and was not released within {wait:.0f}s; if that run is "
                f"dead, its lease expires by itself within {ttl:.0f}s, or delete {path}")
        time.sleep(0.05 + random.random() * 0.2)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            current = _read(fs, path)
            if not current or current.get("token") != token:
                return  # broken by another writer: nothing left to renew
            fs.pipe_file(path, json.dumps({**holder, "expires": time.time() + ttl}).encode())

    heartbeat = threading.Thread(target=renew, name=f"lease {path}", daemon=True)
    heartbeat.start()
    try:
        yield holder
    finally:
        stop.set()
        heartbeat.join()
        current = _read(fs, path)
        if current and current.get("token") == token:
            fs.rm(path)
