"""Device leases: which GPU(s) of this machine a step may use.

Dagster's `gpu` pool caps how many GPU steps run at once, but a pool slot has no number: every
step process that resolves `device: auto` would pick `cuda` = GPU 0. A lease gives each step its
own device(s). A lease is one file per device under a host-local directory, created with
O_CREAT|O_EXCL (atomic: of two processes racing for a device, exactly one creates its file), and
holding the holder's pid and process start time. A lease whose holder is gone (the process died,
or its pid was reused by another process) is stale and is taken over; a step releases its leases
when it ends (the runtime resource's teardown).

Under Ray the cluster is the arbiter: it sets each task's CUDA_VISIBLE_DEVICES, so a step there
takes no lease and uses what it was given (see `synthfactory.ray_executor`).

No torch and no Dagster here: the functions are plain and testable on any machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Set by the Ray executor in every step process it starts: the cluster, not a lease, decides
# the step's devices.
ARBITER_ENV = "SYNTHFACTORY_DEVICE_ARBITER"
# Set by the Ray executor: where the step ran (recorded in the step's metadata).
RAY_NODE_ENV = "SYNTHFACTORY_RAY_NODE_ID"
RAY_WORKER_ENV = "SYNTHFACTORY_RAY_WORKER_ID"
# The op tag that says how many devices a GPU step uses (set by `synthfactory.executors`).
DEVICES_TAG = "synthfactory/devices"


def default_lease_dir() -> Path:
    """The host-local lease directory: one per user, shared by every Dagster instance and run on
    this machine (two runs on one machine must not pick the same GPU either)."""
    return Path(tempfile.gettempdir()) / f"synthfactory-device-leases-{os.getuid()}"


def visible_device_ids(declared: Sequence[int] | None, cuda_count: int) -> list[str]:
    """The ids of the devices this process may lease, as the driver numbers them (the names of
    the lease files): CUDA_VISIBLE_DEVICES' entries when it is set (a GPU list given to this
    process), else `declared` (runtime.visible_devices), else 0..cuda_count-1."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        entries = [entry.strip() for entry in env.split(",") if entry.strip()]
        if declared is not None:
            missing = [index for index in declared if not 0 <= index < len(entries)]
            if missing:
                raise ValueError(f"runtime.visible_devices {list(declared)} names device(s) "
                                 f"{missing} but CUDA_VISIBLE_DEVICES={env!r} shows "
                                 f"{len(entries)}: give indices 0..{len(entries) - 1}")
            return [entries[index] for index in declared]
        return entries
    if declared is not None:
        return [str(index) for index in declared]
    return [str(index) for index in range(cuda_count)]


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/<pid>/stat), None when it is gone;
    with the pid it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return stat.rsplit(")", 1)[1].split()[19]


def _holder_alive(record: dict) -> bool:
    """Whether the process that wrote a lease still runs (on this host)."""
    if record.get("host") != socket.gethostname():
        return True  # not ours to judge: a lease directory shared across hosts is a misconfig
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    start = _process_start(pid)
    if start is None:
        return False
    return record.get("start") in (None, start)


@dataclass
class Lease:
    """Devices held by this process: their ids and the files that hold them."""

    ids: list[str]
    paths: list[Path]
    acquired_at: float

    def release(self) -> None:
        """Remove the lease files that are still ours (a file another process took over after
        this one was presumed dead is left alone)."""
        for path in self.paths:
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                if record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
                    path.unlink()
        self.paths = []


def _try_create(path: Path, record: dict) -> bool:
    """Create the lease file atomically; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(record))
    return True


def _reap_if_stale(path: Path) -> bool:
    """Remove a lease file whose holder is gone; True when the device is now free."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        # Being written right now (created, not yet filled): a live holder. A file that stays
        # unreadable is judged by its age.
        try:
            return time.time() - path.stat().st_mtime > 30 and _unlink(path)
        except FileNotFoundError:
            return True
    if _holder_alive(record):
        return False
    # Rename first, so that of two processes reaping the same stale file only one removes it,
    # and never a fresh lease created in between.
    grave = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return True
    grave.unlink(missing_ok=True)
    return True


def _unlink(path: Path) -> bool:
    path.unlink(missing_ok=True)
    return True


def holders(lease_dir: Path, ids: Sequence[str]) -> dict[str, dict]:
    """id → the record of the process that holds it (for messages and tests)."""
    found = {}
    for device in ids:
        with contextlib.suppress(OSError, ValueError):
            found[device] = json.loads((lease_dir / f"gpu-{device}.lease").read_text())
    return found


def acquire(ids: Sequence[str], count: int, lease_dir: Path, *, owner: str,
            timeout_s: float = 3600.0, poll_s: float = 0.2) -> Lease:
    """Lease `count` of the devices `ids` (the lowest free ones), waiting up to `timeout_s` for
    them to be free. All or none: a step that needs two devices (DDP) never holds one while
    waiting for the other, so two such steps cannot deadlock."""
    if count > len(ids):
        raise ValueError(f"a step needs {count} device(s) (runtime.devices) but this process "
                         f"sees {len(ids)} ({', '.join(ids) or 'none'}): lower runtime.devices "
                         "or run on a machine with more GPUs")
    lease_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "start": _process_start(os.getpid()),
              "host": socket.gethostname(), "owner": owner, "at": time.time()}
    deadline = time.monotonic() + timeout_s
    while True:
        taken: list[Path] = []
        for device in ids:
            path = lease_dir / f"gpu-{device}.lease"
            if _try_create(path, record) or (_reap_if_stale(path) and _try_create(path, record)):
                taken.append(path)
                if len(taken) == count:
                    chosen = [p.name[len("gpu-"):-len(".lease")] for p in taken]
                    return Lease(chosen, taken, time.time())
        Lease([], taken, 0.0).release()  # not enough: give back what we got, try again
        if time.monotonic() > deadline:
            busy = {device: f"{r.get('owner')} (pid {r.get('pid')})"
                    for device, r in holders(lease_dir, ids).items()}
            raise TimeoutError(f"no {count} free device(s) of {list(ids)} after {timeout_s:.0f}s; "
                               f"held by {busy} (leases in {lease_dir}): set the instance's gpu "
                               f"pool limit to the number of GPUs (`dagster instance concurrency "
                               f"set gpu {len(ids)}`) or raise runtime.lease_timeout_s")
        time.sleep(poll_s)
