"""The report aggregates the replicates that exist: a replicate not materialized, or whose arm
was recorded as not built, is left out and listed as missing."""

from __future__ import annotations

import json
from pathlib import Path

from synthfactory.ops.report.arm_scores import replicate_directories, replicate_status


def _require(root: Path):  # noqa: ANN202 - the store's require, for one replicate's directory
    def require(*parts: str) -> Path:
        path = root.joinpath(*parts)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize {parts[0]!r}")
        return path
    return require


def test_missing_and_not_built_replicates_are_left_out_and_named(tmp_path: Path) -> None:
    (tmp_path / "r1" / "classifier_mixed").mkdir(parents=True)
    (tmp_path / "r2" / "classifier_mixed").mkdir(parents=True)
    (tmp_path / "r2" / "classifier_mixed" / "not_built.json").write_text(json.dumps(
        {"reason": "class 3 has no image in the filtered set", "asset": "classifier_mixed"}))
    replicas = {replicate: _require(tmp_path / replicate) for replicate in ("r1", "r2", "r3")}
    assert replicate_directories(replicas, "classifier_mixed") == {
        "r1": tmp_path / "r1" / "classifier_mixed"}
    rows = {"mixed": {"replicates": ["r0", "r1"]}, "real": {}}
    status = replicate_status(replicas, ["real", "mixed"], rows)
    assert status["asked"] == 4 and status["pooled"] == {"mixed": ["r0", "r1"]}
    assert status["missing"] == {"mixed": ["r2", "r3"]}
    assert status["replicated"] == ["prompts", "synthetic_shards", "shard_scores", "filtered_set"]
