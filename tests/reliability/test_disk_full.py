"""A full disk fails the step with an error naming the path, and the previous good data stays.

Two real ways to run out of room, each in a subprocess so the limit touches nothing else:
- a 96 KiB tmpfs mounted in a private user+mount namespace (`unshare -rm`): real ENOSPC;
- RLIMIT_FSIZE on the real CLI: every write past the limit fails with EFBIG (in
  test_crash_resume.py, which has the upstream store it needs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from synthfactory.ops.storage.atomic import DiskFullError, atomic_dir
from synthfactory.ops.storage.shards import Sample, verify_shard, write_shard
from tests.reliability.crashing import cli_env, digests, finished_looking

# Runs inside the namespace with the tmpfs mounted at argv[1]: a good shard and a good directory
# fit; then a rewrite of each with incompressible images does not.
ENOSPC_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from synthfactory.ops.storage.atomic import DiskFullError, atomic_dir, sha256_file
    from synthfactory.ops.storage.shards import Sample, verify_shard, write_shard

    root = Path(sys.argv[1])
    noise = np.random.default_rng(0)
    def samples(n, size):
        return [Sample(key=f"k{i}", image=noise.integers(0, 256, (size, size, 3), dtype=np.uint8),
                       label=0) for i in range(n)]
    write_shard(root / "shard-00000.tar", samples(2, 8))
    with atomic_dir(root / "distilled_set") as d:
        write_shard(d / "distilled-00000.tar", samples(2, 8))
    before = {p.name: sha256_file(p) for p in root.rglob("*") if p.is_file()}
    errors = []
    for attempt in ("shard", "dir"):
        try:
            if attempt == "shard":
                write_shard(root / "shard-00000.tar", samples(20, 64))
            else:
                with atomic_dir(root / "distilled_set") as d:
                    write_shard(d / "distilled-00000.tar", samples(20, 64))
        except DiskFullError as error:
            errors.append(str(error))
    after = {p.name: sha256_file(p) for p in root.rglob("*") if p.is_file()}
    print(json.dumps({"errors": errors, "same": before == after, "files": sorted(after),
                      "intact": verify_shard(root / "shard-00000.tar") == []
                                and verify_shard(root / "distilled_set" / "distilled-00000.tar") == []}))
""")


def _private_tmpfs_works(directory: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs '{directory}'"],
                           capture_output=True)
    return probe.returncode == 0


def test_a_full_tmpfs_fails_with_the_path_and_keeps_the_previous_outputs(tmp_path: Path) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if not _private_tmpfs_works(mount):
        pytest.skip("this machine allows no private tmpfs (unshare -rm + mount); the /dev/full "
                    "test below and the RLIMIT_FSIZE test in test_crash_resume.py cover the "
                    "same path")
    script = tmp_path / "fill.py"
    script.write_text(ENOSPC_SCRIPT)
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f"mount -t tmpfs -o size=96k tmpfs '{mount}' && exec '{sys.executable}' '{script}' "
         f"'{mount}'"], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["errors"]) == 2
    for error in report["errors"]:
        assert "the disk is full (no space left on device)" in error
        assert "[Errno 28]" in error and "the previous" in error and "is untouched" in error
    assert f"cannot write {mount}/shard-00000.tar" in report["errors"][0]
    assert "distilled-00000.tar" in report["errors"][1]
    assert report["same"] and report["intact"]
    # Nothing but the previous outputs: no temporaries left to fill the disk further.
    assert report["files"] == ["distilled-00000.json", "distilled-00000.tar", "shard-00000.json",
                               "shard-00000.tar"]


def test_enospc_from_dev_full_becomes_a_disk_full_error(tmp_path: Path) -> None:
    # The same code path without a mount: a write to /dev/full fails with ENOSPC, which becomes
    # DiskFullError naming the output being written.
    previous = write_shard(tmp_path / "a.tar", [Sample("k0", np.zeros((4, 4), np.uint8), 0)])
    with pytest.raises(DiskFullError, match=r"cannot write .*a\.tar: the disk is full"):
        write_shard(tmp_path / "a.tar", _write_to_dev_full())
    assert verify_shard(tmp_path / "a.tar") == [] and digests(tmp_path)["a.tar"] == previous.sha256
    with pytest.raises(DiskFullError, match=r"cannot write .*out: the disk is full"):
        with atomic_dir(tmp_path / "out"):
            _write_to_dev_full_now()
    assert finished_looking(tmp_path) == ["a.json", "a.tar"]


def _write_to_dev_full() -> object:
    yield Sample("k0", np.zeros((4, 4), np.uint8), 0)
    _write_to_dev_full_now()


def _write_to_dev_full_now() -> None:
    with open("/dev/full", "wb") as handle:
        handle.write(b"x")
        handle.flush()
