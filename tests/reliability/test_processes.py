"""Across separate processes: the same tiny materialization in two processes gives byte-identical
shards, and two backfills of the same shard range started together on one store both end, with
the same bytes as a single run and no FileNotFoundError."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.shards import finished_shards
from tests.support import PROJECT_ROOT, tiny_params

UPSTREAM = "key:real_images or key:prompts or key:generator or key:synthetic_shards"


def _cli(workdir: Path, home: Path, *args: str) -> subprocess.Popen:
    """`synthfactory run` in `workdir` (relative store paths), its own Dagster instance."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)])}
    env.pop("SYNTHFACTORY_PARAMS", None)
    return subprocess.Popen([sys.executable, "-m", "synthfactory.cli", "run", "--params",
                             "params.yaml", *args], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _digests(workdir: Path) -> dict[str, str]:
    shards = finished_shards(workdir / "data" / "synthetic_shards")
    return {p.name: sha256_file(p) for p in shards} | {
        p.with_suffix(".json").name: sha256_file(p.with_suffix(".json")) for p in shards}


def test_two_processes_give_the_same_shards_and_two_racing_backfills_both_end(
        tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    for directory in dirs:
        directory.mkdir()
        raw = tiny_params(directory)
        raw["store"], raw["eval_report"] = {"root": "data"}, {"output_dir": "reports/eval"}
        (directory / "params.yaml").write_text(yaml.safe_dump(raw))
    runs = [_cli(d, tmp_path / f"home-{d.name}", "--select", UPSTREAM) for d in dirs]
    for run in runs:
        out, err = run.communicate(timeout=500)
        assert run.returncode == 0, err[-3000:]
    reference = _digests(dirs[0])
    assert len(reference) == 6  # 3 shards and their sidecars
    assert _digests(dirs[1]) == reference  # determinism across two separate processes

    # Two backfills of the same range on one store, started together (two instances: two
    # machines sharing a disk): they take turns per shard through the partitions' leases.
    shards = dirs[1] / "data" / "synthetic_shards"
    shutil.rmtree(shards)
    racing = [_cli(dirs[1], tmp_path / f"home-race-{i}", "--select", "key:synthetic_shards",
                   "--partitions", "00000...00002") for i in range(2)]
    outputs = [run.communicate(timeout=500) for run in racing]
    for run, (out, err) in zip(racing, outputs, strict=True):
        assert "FileNotFoundError" not in err and "FileNotFoundError" not in out, err[-3000:]
        assert run.returncode == 0, err[-3000:]
    assert _digests(dirs[1]) == reference
    assert not list(shards.glob(".tmp-*"))
