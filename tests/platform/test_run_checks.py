"""`synthfactory run` executes the asset checks of what it materializes: a failed blocking check
stops everything downstream of it, the summary names it, and the exit code is non-zero."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import synthfactory.ops.generation.shard_writing as shard_writing
from synthfactory.assets.checks import ASSET_CHECKS
from synthfactory.cli import main
from synthfactory.ops.storage.shards import write_shard

DOWNSTREAM = ["filtered_set", "classifier_synthetic", "eval_report", "distilled_set"]


def _write_then_break(tar_path: Path, samples: Any, extra: Any = None) -> Any:
    """`write_shard`, then the finished shard's sidecar altered: its sha256 no longer matches the
    tar (the images still decode, so only the integrity check can notice)."""
    info = write_shard(tar_path, samples, extra)
    sidecar = tar_path.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "sha256": "0" * 64}))
    return info


def test_a_failed_blocking_check_stops_everything_downstream(
        tiny_params_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shard_writing, "write_shard", _write_then_break)
    code = main(["run", "--params", str(tiny_params_file)])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "blocking check synthetic_shards_integrity of synthetic_shards failed: " in err, err
    assert "sha256" in err  # the check's own message
    not_run = next(line for line in err.splitlines() if "not run because a blocking check" in line)
    for name in DOWNSTREAM:
        assert name in not_run, not_run
    data = tiny_params_file.parent / "data"
    for name in DOWNSTREAM:
        assert not (data / name).exists(), f"{name} was materialized after a failed blocking check"
    assert not (tiny_params_file.parent / "reports" / "eval" / "metrics.json").exists()
    assert "asset checks: " in out and "1 failed and blocking" in out, out


def test_no_checks_keeps_the_old_behaviour_and_says_so(
        tiny_params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--params", str(tiny_params_file), "--no-checks", "--select",
                 "key:real_images or key:prompts"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "asset checks: skipped (--no-checks)" in out, out


def test_every_blocking_check_is_declared_and_warnings_do_not_claim_to_block() -> None:
    blocking = {spec.name for check in ASSET_CHECKS for spec in check.check_specs if spec.blocking}
    assert blocking == {"real_images_integrity", "synthetic_shards_integrity",
                        "synthetic_shards_class_balance", "distilled_set_size"}
    assert "filtered_set_every_class_kept" not in blocking  # a WARN check blocks nothing


def test_real_images_integrity_fails_on_a_shard_missing_from_the_manifest(
        tiny_params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--params", str(tiny_params_file), "--select", "key:real_images"]) == 0
    directory = tiny_params_file.parent / "data" / "real_images"
    from synthfactory.ops import checks

    manifest = json.loads((directory / "manifest.json").read_text())
    assert checks.manifest_integrity(directory, manifest).passed
    victim = sorted(directory.glob("train-*.tar"))[-1]
    victim.unlink()
    victim.with_suffix(".json").unlink()  # the shard and its sidecar: nothing on disk is broken
    assert checks.shard_integrity(directory).passed  # what the old check looked at
    outcome = checks.manifest_integrity(directory, manifest)
    assert not outcome.passed and f"{victim.name}: in the manifest but missing" in outcome.description


def test_run_tags_carry_the_time_limit(tiny_params_file: Path, _test_dagster_home: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--params", str(tiny_params_file), "--select", "key:prompts",
                 "--max-runtime", "900"]) == 0
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.tags["dagster/max_runtime"] == "900"
    assert main(["run", "--params", str(tiny_params_file), "--select", "key:prompts"]) == 0
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        assert instance.get_runs()[0].tags["dagster/max_runtime"] == str(12 * 3600)
