"""CLI backfills of shard ranges: the project CLI (in-process, then one more shard through the
multiprocess executor) and Dagster's own `dagster asset materialize --partition-range`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from synthfactory.cli import main
from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.shards import finished_shards


def test_cli_backfills_a_range_then_one_shard_with_two_processes(
        tiny_params_file: Path, _test_dagster_home: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    shards_dir = tiny_params_file.parent / "data" / "synthetic_shards"
    args = ["run", "--params", str(tiny_params_file)]
    assert main([*args, "--select", "*synthetic_shards", "--partitions", "00001...00002"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_shards" in out and "(2 partition(s): 00001, 00002)" in out, out
    assert "1 run(s) succeeded" in out, out
    assert [p.name for p in finished_shards(shards_dir)] == ["shard-00001.tar", "shard-00002.tar"]

    # The missing shard, in a step process of the multiprocess executor, on the persistent
    # instance (the CLI's DAGSTER_HOME): the run and its check results are recorded there.
    assert main([*args, "--select", "synthetic_shards", "--partitions", "00000",
                 "--processes", "2"]) == 0
    out = capsys.readouterr().out
    assert "(1 partition(s): 00000)" in out, out
    assert len(finished_shards(shards_dir)) == 3
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.is_success for run in runs)
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("synthetic_shards"), "synthetic_shards_integrity")])
        assert len(checks) == 1

    assert main([*args, "--select", "synthetic_shards", "--partitions", "00007"]) == 2
    assert ("'00007' is not a partition of the selected assets; synthetic_shards: "
            "00000...00002") in capsys.readouterr().err

    # A replicate's copy through the same path: its step process rebuilds the job from the
    # params file and names the asset `r1/synthetic_shards` (two key parts).
    raw = yaml.safe_load(tiny_params_file.read_text())
    tiny_params_file.write_text(yaml.safe_dump({**raw, "replicates": 2}))
    assert main([*args, "--select", "key:r1/prompts"]) == 0
    assert main([*args, "--select", "key:r1/synthetic_shards", "--partitions", "00000",
                 "--processes", "2"]) == 0
    replica = tiny_params_file.parent / "data" / "r1" / "synthetic_shards" / "shard-00000.tar"
    assert sha256_file(replica) != sha256_file(shards_dir / "shard-00000.tar")


def test_dagster_cli_backfills_a_partition_range_and_reruns_one_shard(
        tiny_params_file: Path, _test_dagster_home: Path) -> None:
    """Dagster's own CLI (`dagster asset materialize --partition-range`) on this code location,
    as a user runs it; then one shard deleted and re-made alone, byte-identical."""
    shards_dir = tiny_params_file.parent / "data" / "synthetic_shards"
    # In-process steps: the multiprocess executor's spawned step processes (one per shard
    # check too) are tested above and in test_pools_and_backfills.py, and cost a minute here.
    raw = yaml.safe_load(tiny_params_file.read_text())
    tiny_params_file.write_text(yaml.safe_dump({**raw, "executor": {"kind": "in_process"}}))
    assert main(["run", "--params", str(tiny_params_file), "--select",
                 "key:real_images or key:prompts or key:generator"]) == 0
    env = {**os.environ, "SYNTHFACTORY_PARAMS": str(tiny_params_file),
           "DAGSTER_HOME": str(_test_dagster_home)}
    dagster = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize",
               "-m", "synthfactory.definitions", "--select", "synthetic_shards"]

    def materialize(*partition: str) -> None:
        done = subprocess.run([*dagster, *partition], env=env, cwd=tiny_params_file.parent,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    materialize("--partition-range", "00000...00002")
    shards = finished_shards(shards_dir)
    assert [p.name for p in shards] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    digests = {p.name: sha256_file(p) for p in shards}
    untouched = (shards_dir / "shard-00000.tar").stat().st_mtime_ns

    (shards_dir / "shard-00001.tar").unlink()
    materialize("--partition", "00001")
    assert {p.name: sha256_file(p) for p in finished_shards(shards_dir)} == digests
    assert (shards_dir / "shard-00000.tar").stat().st_mtime_ns == untouched
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(run.is_success for run in runs)
