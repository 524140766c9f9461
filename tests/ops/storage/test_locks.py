"""Leases on a local disk: exclusive under a race, expired and empty leases broken atomically,
an honest message when a writer gives up; temporary files removed only for dead writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest

from synthfactory.ops.storage.atomic import (TEMP_PREFIX, Writer, atomic_file, current_writer,
                                             remove_stale_temps, temp_sibling)
from synthfactory.ops.storage.locks import LeaseTimeout, lease
from synthfactory.resources.store import ArtifactStore
from tests.ops.storage.lease_race import race

LOCAL = fsspec.filesystem("file")


def test_two_processes_racing_for_a_local_lease_never_both_hold_it(tmp_path: Path) -> None:
    holders = race({"protocol": "file"}, (tmp_path / "unit.json").as_posix(), trials=100)
    print(f"local lease race: holders per trial {dict(sorted((n, holders.count(n)) for n in set(holders)))}")
    assert holders == [1] * 100, f"trials with two holders: {[i for i, n in enumerate(holders) if n > 1]}"


def test_an_expired_lease_is_broken_by_exactly_one_of_many_writers(tmp_path: Path) -> None:
    path = tmp_path / "unit.json"
    inside, peak, lock = [0], [0], threading.Lock()

    def writer() -> None:
        with lease(LOCAL, path.as_posix(), ttl=5, wait=30):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    # 20 rounds: the earlier rename-check-put-back breaking let two writers in about once in a
    # few hundred rounds on 2 loaded cores (a clean-clone `make test`, 2026-12-07).
    for _ in range(20):  # a crashed holder's lease: expired a minute ago, never renewed again
        path.write_text(json.dumps({"token": "dead", "host": "h", "pid": 1,
                                    "expires": time.time() - 60}))
        threads = [threading.Thread(target=writer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak[0] == 1 and not path.exists()
    assert not list(tmp_path.glob("unit.json.*"))  # breakers leave no guard or temporary


def test_a_guard_left_by_a_dead_breaker_is_cleared_after_it_goes_stale(tmp_path: Path) -> None:
    """A breaker killed between taking the guard and releasing it does not block the lease
    forever: once the guard is older than GUARD_STALE_S the next writer clears it and breaks
    the dead lease; a fresh guard is respected (the writer waits)."""
    import os

    from synthfactory.ops.storage.locks import GUARD_STALE_S

    path = tmp_path / "unit.json"
    path.write_text(json.dumps({"token": "dead", "host": "h", "pid": 1,
                                "expires": time.time() - 60}))
    guard = tmp_path / "unit.json.breaking"
    guard.touch()
    with pytest.raises(LeaseTimeout):
        with lease(LOCAL, path.as_posix(), ttl=5, wait=0.3):
            pass
    old = time.time() - GUARD_STALE_S - 1
    os.utime(guard, (old, old))
    with lease(LOCAL, path.as_posix(), ttl=5, wait=5) as held:
        assert json.loads(path.read_text())["token"] == held["token"]
    assert not path.exists() and not guard.exists()


def test_an_empty_lease_counts_as_expired_only_after_the_ttl(tmp_path: Path) -> None:
    path = tmp_path / "unit.json"
    path.write_bytes(b"")  # a writer killed between creating the lease and writing it
    with pytest.raises(LeaseTimeout) as refused:
        with lease(LOCAL, path.as_posix(), ttl=30, wait=0.2):
            pass
    message = str(refused.value)
    assert "empty or unreadable" in message and str(path) in message
    assert "expires by itself" not in message  # it would not: it counts as expired by its age
    old = time.time() - 60
    os.utime(path, (old, old))  # older than the ttl: broken, taken, released
    with lease(LOCAL, path.as_posix(), ttl=30, wait=1) as holder:
        assert json.loads(path.read_text())["token"] == holder["token"]
    assert not path.exists()


def test_a_live_holder_is_named_when_a_writer_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "unit.json"
    with lease(LOCAL, path.as_posix(), ttl=30):
        with pytest.raises(LeaseTimeout, match=rf"held by .* pid {os.getpid()}.*renewed"):
            with lease(LOCAL, path.as_posix(), ttl=30, wait=0):
                pass


def test_the_heartbeat_keeps_a_long_write_s_lease(tmp_path: Path) -> None:
    path = tmp_path / "unit.json"
    with lease(LOCAL, path.as_posix(), ttl=0.6):
        time.sleep(1.5)  # more than twice the ttl: only renewals keep it
        with pytest.raises(LeaseTimeout):
            with lease(LOCAL, path.as_posix(), ttl=0.6, wait=0):
                pass


def test_store_leased_releases_each_partition_even_when_the_body_raises(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path / "data"))
    locks = tmp_path / "data" / ".locks" / "synthetic_shards"
    for key in store.leased("synthetic_shards", ["00000", "00001"]):
        assert (locks / f"{key}.json").is_file()
    assert not list(locks.glob("*.json"))

    def failing() -> None:
        for key in store.leased("synthetic_shards", ["00000", "00001"]):
            raise RuntimeError(f"generation of {key} failed")

    with pytest.raises(RuntimeError):
        failing()
    assert not list(locks.glob("*.json"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_provably_dead_writers_temporaries_are_removed(tmp_path: Path) -> None:
    final = tmp_path / "shard-00000.tar"
    me = current_writer()
    mine = temp_sibling(final)
    dead = final.with_name(f"{TEMP_PREFIX}{final.name}.{Writer(me.host, _dead_pid(), 1).token()}.aa")
    # A live process of this host other than this one: pytest's parent, say.
    live_pid = os.getppid()
    from synthfactory.ops.storage.atomic import process_start_ticks
    live = final.with_name(f"{TEMP_PREFIX}{final.name}."
                           f"{Writer(me.host, live_pid, process_start_ticks(live_pid)).token()}.bb")
    reused = final.with_name(f"{TEMP_PREFIX}{final.name}."
                             f"{Writer(me.host, live_pid, 12345).token()}.cc")  # pid reused
    remote = final.with_name(f"{TEMP_PREFIX}{final.name}.{Writer('elsewhere', 7, 7).token()}.dd")
    legacy = final.with_name(f"{TEMP_PREFIX}{final.name}.1234abcd")  # no writer in its name
    for path in (mine, dead, live, reused, remote, legacy):
        path.write_bytes(b"partial")
    assert set(remove_stale_temps(final)) == {dead, reused}
    assert all(p.exists() for p in (mine, live, remote, legacy))
    old = time.time() - 2 * 24 * 3600
    for path in (remote, legacy):
        os.utime(path, (old, old))  # older than any write: whoever left it is gone
    assert set(remove_stale_temps(final)) == {remote, legacy}


def test_a_second_writer_does_not_remove_a_live_writer_s_temporary(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    script = ("import sys, time\nfrom pathlib import Path\n"
              "from synthfactory.ops.storage.atomic import atomic_file\n"
              "with atomic_file(Path(sys.argv[1])) as temp:\n"
              "    temp.write_bytes(b'first'); print('writing', flush=True); time.sleep(3)\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(final)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert first.stdout.readline().strip() == "writing"
    with atomic_file(final) as temp:  # the second writer of the same output
        temp.write_bytes(b"second")
    assert first.wait(timeout=60) == 0  # its temporary survived: no FileNotFoundError
    assert final.read_bytes() == b"first"
