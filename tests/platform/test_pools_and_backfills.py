"""Multiprocess runs on the shipped instance config: the gpu pool serialises GPU steps, and a
backfill of every shard in step processes writes the same bytes as a serial in-process run."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from synthfactory.automation import all_shards_tags
from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.shards import finished_shards
from synthfactory.params import load_params, parse_params
from tests.support import PROJECT_ROOT, tiny_params

ROOT = PROJECT_ROOT
UPSTREAM = ["real_images", "prompts", "generator"]
GPU_STEPS = {"judge", "synthetic_shards"}  # both depend only on the upstream: free to overlap


def gpu_job(params_file: str) -> dg.JobDefinition:
    """The two GPU assets without their checks (fewer step processes: a faster test)."""
    defs = build_definitions(load_params(params_file))
    job = dg.define_asset_job("gpu_steps", selection=dg.AssetSelection.assets(
        *GPU_STEPS).without_checks())
    return dg.Definitions(assets=defs.assets, jobs=[job], resources=defs.resources,
                          executor=defs.executor).resolve_job_def("gpu_steps")


def _step_windows(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key → (start, end) timestamps from the run's event log."""
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in {"STEP_SUCCESS", "STEP_FAILURE"}:
            ends[event.step_key] = entry.timestamp
    return {key: (starts[key], ends[key]) for key in starts}


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture(scope="module")
def multiprocess_run(tmp_path_factory: pytest.TempPathFactory
                     ) -> tuple[Path, dict[str, tuple[float, float]], dict[str, str]]:
    """A serial in-process run of everything up to the shards and the judge; then, on a copy of
    its upstream outputs, the judge and every shard in one multiprocess run (2 processes) on an
    instance with the shipped dagster.yaml (gpu pool limit 1)."""
    root = tmp_path_factory.mktemp("multiprocess")
    serial = parse_params(tiny_params(root / "serial"))
    serial_defs = build_definitions(serial)
    keys = serial_defs.get_assets_def("synthetic_shards").partitions_def.get_partition_keys()
    assert dg.materialize(list(serial_defs.assets), selection=[*UPSTREAM, *GPU_STEPS],
                          resources=serial_defs.resources, tags=all_shards_tags(keys)).success

    config = parse_params(tiny_params(root / "parallel"))
    for name in UPSTREAM:
        shutil.copytree(Path(serial.store.root) / name, Path(config.store.root) / name)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(root / "parallel")))
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    job = dg.build_reconstructable_job("tests.platform.test_pools_and_backfills", "gpu_job",
                                       reconstructable_args=(str(params_file),),
                                       reconstructor_working_directory=str(ROOT))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        result = dg.execute_job(
            job, instance, tags=all_shards_tags(keys),
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}})
        assert result.success
        windows = _step_windows(instance, result.run_id)
        blocked = [e.message for e in result.all_events if e.event_type_value == "ENGINE_EVENT"
                   and "blocked by limit for pool gpu" in (e.message or "")]
    digests = {}
    for name, store in (("parallel", config.store.root), ("serial", serial.store.root)):
        for path in finished_shards(Path(store) / "synthetic_shards"):
            digests[f"{name}/{path.name}"] = sha256_file(path)
    return blocked, windows, digests


def test_gpu_steps_never_overlap_with_pool_limit_1(multiprocess_run: tuple) -> None:
    blocked, windows, _ = multiprocess_run
    first, second = sorted(GPU_STEPS)
    assert set(windows) == GPU_STEPS
    assert not _overlap(windows[first], windows[second]), (
        f"{first} {_fmt(windows[first])} overlaps {second} {_fmt(windows[second])}")
    # The executor had room for both (max_concurrent 2, no dependency between them): the one
    # that waited was held back by the pool, and the run's events say so.
    assert blocked, "no engine event mentions the concurrency pool"


def test_multiprocess_backfill_of_all_shards_equals_a_serial_run(multiprocess_run: tuple) -> None:
    _, _, digests = multiprocess_run
    parallel = {k.split("/", 1)[1]: v for k, v in digests.items() if k.startswith("parallel/")}
    serial = {k.split("/", 1)[1]: v for k, v in digests.items() if k.startswith("serial/")}
    assert sorted(parallel) == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    assert parallel == serial


def _fmt(window: tuple[float, float]) -> str:
    return "-".join(datetime.fromtimestamp(t).strftime("%H:%M:%S.%f") for t in window)
