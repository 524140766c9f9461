"""`executor.kind: ray` on a real Ray cluster on 127.0.0.1: a head without GPUs and a worker
node with two declared GPUs (no GPU needed: Ray schedules them and sets each task's
CUDA_VISIBLE_DEVICES). The embedded graph up to the shards runs through the Ray executor, the
shard range fanned out over two runs; the tests then read where each step ran, that the two
shard steps overlapped on different devices, that the shards are the default executor's bytes,
that a failing step fails with the worker's error, and that a killed worker leaves no shard
that looks finished. The fixture stops the cluster it started, also when a test fails.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from synthfactory.definitions import build_definitions
from synthfactory.fanout import run_processes
from synthfactory.ops.storage.shards import finished_shards
from synthfactory.params import load_params, parse_params
from synthfactory.planning import PlannedRun
from tests.platform.ray_cluster import LocalRayCluster
from tests.support import PROJECT_ROOT, tiny_params

pytest.importorskip("ray")

UPSTREAM = ["real_images", "prompts", "generator"]
SHARDS = ("00000", "00001")
JOB = "tests.platform.test_ray_executor:job_without_checks"


def job_without_checks(params_file: str, *assets: str) -> dg.JobDefinition:
    """The assets' job without their checks (each check would be one more Ray task)."""
    defs = build_definitions(load_params(params_file))
    job = dg.define_asset_job("ray_steps", selection=dg.AssetSelection.assets(
        *assets).without_checks())
    return dg.Definitions(assets=defs.assets, jobs=[job], resources=defs.resources,
                          executor=defs.executor).resolve_job_def("ray_steps")


def _ray_params(root: Path, address: str, **overrides: dict) -> Path:
    """Tiny params on the Ray executor (device auto: Ray's devices), written to a file."""
    raw = tiny_params(root, executor={"kind": "ray", "ray": {
        "address": address, "health_check_seconds": 1, "working_dir": str(PROJECT_ROOT)}},
        runtime={"device": "auto", "threads": 1}, **overrides)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(params_file: Path, runs: list[PlannedRun], instance: dg.DagsterInstance) -> list:
    return run_processes(runs, params_file, {}, instance, job_function=JOB)


def _metadata(results: list) -> dict[tuple[str, str | None], dict]:
    """(asset, partition) → its materialization metadata, over the runs."""
    return {(event.asset_key.to_user_string(), event.partition):
            {key: value.value for key, value in event.materialization.metadata.items()}
            for result in results for event in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def cluster() -> LocalRayCluster:
    """Head: 1 CPU, no GPU. Worker: 2 CPUs, 2 GPUs (declared). Stopped at the end."""
    started = LocalRayCluster([(1, 0), (2, 2)])
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance whose gpu pool lets both GPUs work (the shipped config allows one)."""
    home = tmp_path_factory.mktemp("ray_home")
    text = (PROJECT_ROOT / "dagster_home" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(text.replace("default_limit: 1", "default_limit: 2"))
    return home


@pytest.fixture(scope="module")
def ray_graph(cluster: LocalRayCluster, ray_home: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    """The upstream run, then the two shard runs at once, all through the Ray executor."""
    root = tmp_path_factory.mktemp("ray_graph")
    params_file = _ray_params(root, cluster.address)
    env = {"DAGSTER_HOME": str(ray_home), "SYNTHFACTORY_PARAMS": str(params_file)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with dg.DagsterInstance.get() as instance:
            upstream = _run(params_file, [PlannedRun(tuple(map(dg.AssetKey, UPSTREAM)))],
                            instance)
            shards = _run(params_file, [PlannedRun((dg.AssetKey("synthetic_shards"),), (key,))
                                        for key in SHARDS], instance)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return root, upstream, shards


def test_steps_ran_as_ray_tasks_and_gpu_steps_got_their_own_devices(
        ray_graph: tuple[Path, list, list], cluster: LocalRayCluster) -> None:
    _, upstream, shards = ray_graph
    assert all(result.success for result in [*upstream, *shards])
    metadata = _metadata([*upstream, *shards])
    head, worker = cluster.node_ids()
    gpu_steps = {key: record for key, record in metadata.items()
                 if key[0] in {"generator", "synthetic_shards"}}
    assert len(gpu_steps) == 3
    for record in gpu_steps.values():
        # Ray chose the device, in a worker of the only node with GPUs.
        assert record["device_assignment"] == "ray"
        assert record["ray_node_id"] == worker and record["ray_worker_id"]
    first, second = (gpu_steps[("synthetic_shards", key)] for key in SHARDS)
    assert {first["device_ids"], second["device_ids"]} == {"0", "1"}
    assert first["ray_worker_id"] != second["ray_worker_id"]
    # The two shard steps overlapped in time.
    windows = []
    for result in shards:
        times = {entry.dagster_event.event_type_value: entry.timestamp for entry in result.entries
                 if entry.dagster_event.step_key == "synthetic_shards"}
        windows.append((times["STEP_START"], times["STEP_SUCCESS"]))
    (a_start, a_end), (b_start, b_end) = windows
    assert a_start < b_end and b_start < a_end, windows
    # The run's engine events name the Ray task of every step.
    starting = [event for result in [*upstream, *shards] for event in result.all_events
                if event.event_type_value == "STEP_WORKER_STARTING"]
    assert len(starting) == 5 and all("as a Ray task" in event.message for event in starting)


def test_ray_shards_are_the_default_executors_bytes(ray_graph: tuple[Path, list, list],
                                                    tmp_path: Path) -> None:
    root, _, _ = ray_graph
    serial = build_definitions(parse_params(tiny_params(tmp_path)))
    result = dg.materialize(list(serial.assets), selection=[*UPSTREAM, "synthetic_shards"],
                            resources=serial.resources,
                            tags={"dagster/asset_partition_range_start": SHARDS[0],
                                  "dagster/asset_partition_range_end": SHARDS[-1]})
    assert result.success
    ours = sorted((root / "data" / "synthetic_shards").glob("*.tar"))
    theirs = sorted((tmp_path / "data" / "synthetic_shards").glob("*.tar"))
    assert [path.name for path in ours] == [path.name for path in theirs] and len(ours) == 2
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.read_bytes() == reference.read_bytes(), mine.name


@pytest.mark.e2e
def test_a_failing_step_fails_with_the_workers_error(cluster: LocalRayCluster, ray_home: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards without their upstream: the step raises on the worker, the run fails with it."""
    params_file = _ray_params(tmp_path, cluster.address)
    monkeypatch.setenv("DAGSTER_HOME", str(ray_home))
    with dg.DagsterInstance.get() as instance:
        (result,) = _run(params_file, [PlannedRun((dg.AssetKey("synthetic_shards"),),
                                                  ("00000",))], instance)
    assert not result.success
    failures = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    message = failures[0].event_specific_data.error.to_string()
    # The store's error, raised on the worker: what is missing and what to materialize.
    assert "does not exist: materialize the asset" in message, message


def _step_process(store_root: str, timeout_s: float = 180) -> int:
    """The pid of the shard step process of the run whose store is `store_root` (found by the
    environment the Ray executor gives it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if (b"SYNTHFACTORY_STEP_KEY=synthetic_shards" in environ
                    and any(item.startswith(b"SYNTHFACTORY_PARAMS=") and store_root.encode()
                            in item for item in environ)):
                return int(entry.name)
        time.sleep(0.5)
    raise AssertionError(f"no shard step process for {store_root} appeared")


@pytest.mark.e2e
def test_a_killed_worker_fails_the_step_and_leaves_nothing_finished(
        cluster: LocalRayCluster, ray_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the Ray worker in the middle of a (slow) shard: the health check fails the step
    with Ray's error, the step process died with its worker, and no shard is finished."""
    upstream = build_definitions(parse_params(tiny_params(tmp_path)))  # in-process: quicker
    assert dg.materialize(list(upstream.assets), selection=UPSTREAM,
                          resources=upstream.resources).success
    params_file = _ray_params(tmp_path, cluster.address,
                              synthetic_shards={"shard_size": 25, "steps": 400, "batch_size": 16})
    monkeypatch.setenv("DAGSTER_HOME", str(ray_home))
    monkeypatch.setenv("SYNTHFACTORY_PARAMS", str(params_file))
    results: list = []
    with dg.DagsterInstance.get() as instance:
        runner = threading.Thread(target=lambda: results.extend(_run(
            params_file, [PlannedRun((dg.AssetKey("synthetic_shards"),), ("00000",))], instance)))
        runner.start()
        step = _step_process(str(tmp_path))
        time.sleep(3)  # into the sampling loop
        worker = int(Path(f"/proc/{step}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(worker, signal.SIGKILL)
        runner.join(240)
    assert not runner.is_alive()
    (result,) = results
    assert not result.success
    failure = next(event for event in result.all_events
                   if event.event_type_value == "STEP_FAILURE")
    assert "Ray task failed" in failure.event_specific_data.error.message
    assert not Path(f"/proc/{step}").exists() or "Z" in Path(f"/proc/{step}/stat").read_text()
    shards = tmp_path / "data" / "synthetic_shards"
    assert finished_shards(shards) == []
    assert not list(shards.glob("*.tar")) and not list(shards.glob("*.json"))
