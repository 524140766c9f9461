"""Crash and resume: SIGKILL the real CLI mid-step, check nothing looks finished, rerun, compare.

Each test kills `synthfactory run` in a subprocess at a moment read from its log or its files,
checks that no output under its final name (tar, sidecar, manifest, model) exists for the
unfinished work, reruns the same command, and compares sha256 digests with an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.shards import verify_shard
from synthfactory.params import parse_params
from synthfactory.planning import materialize_plan
from tests.reliability.crashing import (
    cli_env,
    digests,
    finished_looking,
    kill_cli_when,
    run_cli,
    write_params,
)
from tests.support import ONE_THREAD, tiny_params

# One torch thread: on a busy 2-core machine two threads spin against other processes and run
# tens of times slower. Slow enough per shard (3 shards of 20 images, 4 images per batch, 40
# sampler steps) that the kill lands inside shard 00001, fast enough for the suite.
SHARDS = {**ONE_THREAD, "prompts": {"images_per_class": 6},
          "synthetic_shards": {"shard_size": 20, "steps": 40, "batch_size": 4}}


def _materialize(root: Path, select: list[str], shards: tuple[str, str] | None = None,
                 **overrides: dict) -> None:
    """In-process materialization (no CLI start-up): for the reference runs."""
    config = parse_params(tiny_params(root, **overrides))
    defs = build_definitions(config)
    tags = {} if shards is None else {"dagster/asset_partition_range_start": shards[0],
                                      "dagster/asset_partition_range_end": shards[1]}
    result = dg.materialize(list(defs.assets), selection=select, resources=defs.resources,
                            tags=tags)
    assert result.success


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with real_images, prompts and generator of the shard params (made once)."""
    root = tmp_path_factory.mktemp("upstream")
    _materialize(root, ["real_images", "prompts", "generator"], **SHARDS)
    return root / "data"


def _store_copy(upstream: Path, root: Path) -> Path:
    shutil.copytree(upstream, root / "data")
    return write_params(root / "params.yaml", tiny_params(root, **SHARDS))


@pytest.fixture(scope="module")
def reference_shards(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """sha256 of each shard and sidecar of an uninterrupted run on the upstream store."""
    root = tmp_path_factory.mktemp("reference")
    _store_copy(upstream, root)
    _materialize(root, ["synthetic_shards"], ("00000", "00002"), **SHARDS)
    return digests(root / "data" / "synthetic_shards")


def test_killed_generation_leaves_no_finished_shard_and_a_rerun_completes_only_the_rest(
        upstream: Path, reference_shards: dict[str, str], tmp_path: Path) -> None:
    expected = {name: digest for name, digest in reference_shards.items() if name.endswith(".tar")}
    assert sorted(expected) == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]

    crashed = tmp_path / "crashed"
    params = _store_copy(upstream, crashed)
    shards = crashed / "data" / "synthetic_shards"
    args = ["run", "--params", str(params), "--select", "synthetic_shards"]

    def inside_shard_1(output: str) -> bool:
        # Shard 00000 is published and shard 00001's tar is being written under a temporary name.
        return "shard 00000:" in output and any(shards.glob(".tmp-shard-00001.tar.*"))

    kill_cli_when(args, crashed, inside_shard_1)
    assert finished_looking(shards) == ["shard-00000.json", "shard-00000.tar"]
    first = shards / "shard-00000.tar"
    before = (first.stat().st_mtime_ns, first.stat().st_ino)

    rerun = run_cli(args, cwd=crashed)
    assert rerun.returncode == 0, rerun.stderr
    log = rerun.stdout + rerun.stderr
    assert "shard 00000: already finished from the same inputs, kept" in log
    assert "shard 00001: 20 images" in log and "shard 00002: 20 images" in log
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == before  # not rewritten
    assert digests(shards, "*.tar") == expected
    assert finished_looking(shards) == sorted([*expected, "shard-00000.json", "shard-00001.json",
                                               "shard-00002.json"])
    assert not list(shards.glob(".tmp-*"))  # the killed run's temporary was cleaned up


def test_a_corrupted_finished_shard_is_regenerated_not_kept(
        upstream: Path, reference_shards: dict[str, str], tmp_path: Path) -> None:
    _store_copy(upstream, tmp_path)
    _materialize(tmp_path, ["synthetic_shards"], ("00000", "00000"), **SHARDS)
    tar = tmp_path / "data" / "synthetic_shards" / "shard-00000.tar"
    good = tar.stat().st_mtime_ns
    _materialize(tmp_path, ["synthetic_shards"], ("00000", "00000"), **SHARDS)
    assert tar.stat().st_mtime_ns == good  # intact and current: kept, not rewritten
    data = bytearray(tar.read_bytes())
    data[700] ^= 0x01
    tar.write_bytes(bytes(data))
    _materialize(tmp_path, ["synthetic_shards"], ("00000", "00000"), **SHARDS)
    assert digests(tar.parent) == {name: digest for name, digest in reference_shards.items()
                                   if name.startswith("shard-00000")}


def test_killed_generator_training_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    overrides = {**ONE_THREAD,
                 "generator": {"ddpm": {"widths": [16, 32], "train_steps": 150, "batch_size": 32,
                                        "checkpoint_every": 50}}}
    reference = tmp_path / "reference"
    _materialize(reference, ["real_images", "generator"], **overrides)
    expected = json.loads((reference / "data" / "generator" / "generator.json").read_text())
    assert not (reference / "data" / ".checkpoints" / "generator").exists()  # removed when done

    crashed = tmp_path / "crashed"
    _materialize(crashed, ["real_images"], **overrides)
    params = write_params(crashed / "params.yaml", tiny_params(crashed, **overrides))
    args = ["run", "--params", str(params), "--select", "generator"]
    # Step 101 is logged after the checkpoint of step 100 was published.
    kill_cli_when(args, crashed, lambda output: "generator training step 101/150" in output)
    store = crashed / "data"
    assert finished_looking(store) == [".checkpoints", "real_images"]  # no generator/
    checkpoint = store / ".checkpoints" / "generator"
    assert json.loads((checkpoint / "step.json").read_text())["step"] == 100
    assert sorted(p.name for p in checkpoint.iterdir()) == ["state.safetensors", "step.json"]

    rerun = run_cli(args, cwd=crashed)
    assert rerun.returncode == 0, rerun.stderr
    log = rerun.stdout + rerun.stderr
    assert "generator training: resuming from the checkpoint at step 100/150" in log
    assert "generator training step 1/150" not in log  # the first 100 steps are not redone
    again = json.loads((store / "generator" / "generator.json").read_text())
    assert again["digest"] == expected["digest"]  # bit-identical weights
    assert not checkpoint.exists() and not list(store.glob(".tmp-*"))


def test_killed_distillation_keeps_the_previous_set_and_a_rerun_is_identical(
        tmp_path: Path) -> None:
    overrides = {**ONE_THREAD,
                 "distilled_set": {"methods": ["dm"], "ipcs": [2],
                                   "dm": {"iterations": 150, "batch_real": 16}}}
    graph = ["real_images", "prompts", "generator", "synthetic_shards", "judge", "shard_scores",
             "filtered_set", "distilled_set"]
    config = parse_params(tiny_params(tmp_path, **overrides))
    assert materialize_plan(build_definitions(config), graph).success  # shards, then the cell
    distilled = tmp_path / "data" / "distilled_set"
    # summary.json records the seconds it took; the shard and its sidecar are the data.
    expected = digests(distilled, "distilled-*")
    assert sorted(expected) == ["distilled-00000.json", "distilled-00000.tar"]
    assert finished_looking(distilled) == ["cells", "distilled-00000.json",
                                           "distilled-00000.tar", "summary.json"]
    # A rerun keeps a cell finished from the same inputs: remove it so the CLI distils again.
    shutil.rmtree(distilled / "cells" / "dm-ipc2-filtered")

    params = write_params(tmp_path / "params.yaml", tiny_params(tmp_path, **overrides))
    args = ["run", "--params", str(params), "--select", "distilled_set"]
    kill_cli_when(args, tmp_path, lambda output: "dm iteration 101/150" in output)
    # The finished set of the previous run is still whole: the new one was a temporary sibling.
    assert digests(distilled, "distilled-*") == expected
    rerun = run_cli(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(distilled, "distilled-*") == expected
    summary = json.loads((distilled / "summary.json").read_text())
    assert summary["sha256"] == expected["distilled-00000.tar"]
    assert not list((tmp_path / "data").glob(".tmp-*"))


LIMITED_CLI = textwrap.dedent("""
    import resource, signal, sys
    # Past the limit a write fails with EFBIG instead of the process being killed by SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from synthfactory.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_the_cli_fails_the_step_on_a_full_disk_and_keeps_the_previous_shard(
        upstream: Path, tmp_path: Path) -> None:
    _store_copy(upstream, tmp_path)
    _materialize(tmp_path, ["synthetic_shards"], ("00000", "00000"), **SHARDS)
    args = ["run", "--params", str(tmp_path / "params.yaml"), "--select", "synthetic_shards",
            "--partitions", "00000"]
    shards = tmp_path / "data" / "synthetic_shards"
    previous = digests(shards)
    tar_size = (shards / "shard-00000.tar").stat().st_size

    # Other sampler settings: the shard must be generated again, and will not fit.
    other = dict(SHARDS, synthetic_shards={**SHARDS["synthetic_shards"], "steps": 8})
    write_params(tmp_path / "params.yaml", tiny_params(tmp_path, **other))
    script = tmp_path / "limited.py"
    script.write_text(LIMITED_CLI)
    done = subprocess.run([sys.executable, str(script), str(tar_size // 2), *args], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("synthfactory: error:")]
    assert len(errors) == 1, done.stderr
    assert f"cannot write {shards}/shard-00000.tar" in errors[0]
    assert "the file size limit was reached (EFBIG)" in errors[0] and "DiskFullError" in errors[0]
    assert "Traceback" not in done.stderr and "Stack Trace" not in done.stderr
    assert digests(shards) == previous  # the previous good shard and its sidecar, untouched
    assert verify_shard(shards / "shard-00000.tar") == []
    assert finished_looking(shards) == ["shard-00000.json", "shard-00000.tar"]
