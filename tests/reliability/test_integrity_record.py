"""Integrity against the record: shards the filter left out fail a check, commit records cannot
write outside the cache, and DVC calls end."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from synthfactory.ops import checks
from synthfactory.ops.storage.remote import RemoteMirror, confined
from synthfactory.resources.dvc import DvcError, DvcResource


def test_a_shard_left_out_of_the_filtered_set_fails_its_check() -> None:
    finished = {"shard-00000.tar": "a" * 64, "shard-00001.tar": "b" * 64}
    assert checks.shards_filtered(dict(finished), finished).passed
    stale = checks.shards_filtered({"shard-00000.tar": "a" * 64}, finished)
    assert not stale.passed and "shard-00001.tar" in stale.description
    assert "materialize shard_scores" in stale.description
    rewritten = checks.shards_filtered({**finished, "shard-00001.tar": "c" * 64}, finished)
    assert not rewritten.passed and rewritten.details["rewritten"] == ["shard-00001.tar"]


@pytest.mark.parametrize("name", ["../outside", "a/../../b", "/etc/passwd", "a\\b", "a//b", "."])
def test_commit_record_names_outside_the_cache_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a relative path inside the store"):
        confined(name, "file")


def test_a_pull_refuses_a_commit_record_that_escapes_the_cache(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    mirror = RemoteMirror(f"memory://{tmp_path.name}-escape", tmp_path / "cache")
    mirror.fs.pipe_file(f"{mirror.url}/judge/x", b"payload")
    record = {"unit": "judge", "kind": "dir",
              "files": {"../../escaped": {"sha256": "0" * 64, "size": 7}}}
    mirror.fs.pipe_file(f"{mirror.url}/_commits/judge.json", json.dumps(record).encode())
    with pytest.raises(ValueError, match="'../../escaped'"):
        mirror.pull("judge")
    assert not (tmp_path / "escaped").exists() and not remote.exists()


def test_a_dvc_call_that_hangs_fails_within_its_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "dvc"
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    dvc = DvcResource(executable=str(fake), repo=str(tmp_path), timeout_s=1)
    with pytest.raises(DvcError, match=r"did not finish within dvc.timeout_s = 1s"):
        dvc.run("push")
    assert os.access(fake, os.X_OK)
