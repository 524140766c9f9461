"""CLI backfills of shard ranges: in-process, then one more shard through the multiprocess executor."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from synthfactory.cli import main
from synthfactory.ops.shards import finished_shards


def test_cli_backfills_a_range_then_one_shard_with_two_processes(
        tiny_params_file: Path, _test_dagster_home: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    shards_dir = tiny_params_file.parent / "data" / "synthetic_shards"
    args = ["run", "--params", str(tiny_params_file)]
    assert main([*args, "--select", "*synthetic_shards", "--partitions", "00001...00002"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_shards" in out and "(2 shards)" in out and "run succeeded" in out
    assert [p.name for p in finished_shards(shards_dir)] == ["shard-00001.tar", "shard-00002.tar"]

    # The missing shard, in a step process of the multiprocess executor, on the persistent
    # instance (the CLI's DAGSTER_HOME): the run and its check results are recorded there.
    assert main([*args, "--select", "synthetic_shards", "--partitions", "00000",
                 "--processes", "2"]) == 0
    assert "(1 shards)" in capsys.readouterr().out
    assert len(finished_shards(shards_dir)) == 3
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.is_success for run in runs)
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("synthetic_shards"), "synthetic_shards_integrity")])
        assert len(checks) == 1

    assert main([*args, "--select", "synthetic_shards", "--partitions", "00007"]) == 2
    assert "shard '00007' does not exist; shards are 00000...00002" in capsys.readouterr().err
