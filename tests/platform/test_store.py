"""The artifact store publishes atomically: a failed write leaves the previous output in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthfactory.resources.store import ArtifactStore


def test_publish_dir_replaces_only_on_success(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path))
    with store.publish_dir("asset") as directory:
        (directory / "manifest.json").write_text("v1")
    with pytest.raises(RuntimeError), store.publish_dir("asset") as directory:
        (directory / "manifest.json").write_text("half-written v2")
        raise RuntimeError("crash mid-write")
    assert (tmp_path / "asset" / "manifest.json").read_text() == "v1"
    # No temporary left behind (.locks holds the writers' leases: ops/storage/locks.py).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".locks") == ["asset"]
    with store.publish_dir("asset") as directory:
        (directory / "manifest.json").write_text("v2")
    assert (tmp_path / "asset" / "manifest.json").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".locks") == ["asset"]


def test_publish_file_and_require(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="materialize the asset 'prompts' first"):
        store.require("prompts", "prompts.jsonl")
    with pytest.raises(ValueError), store.publish_file("prompts", "prompts.jsonl") as temp:
        temp.write_text("partial")
        raise ValueError("bad record")
    assert not store.path("prompts", "prompts.jsonl").exists()
    with store.publish_file("prompts", "prompts.jsonl") as temp:
        temp.write_text("ok")
    assert store.require("prompts", "prompts.jsonl").read_text() == "ok"
