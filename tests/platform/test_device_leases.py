"""One machine, all its GPUs: device leases give concurrent GPU steps different devices.

The leases themselves (atomic creation, all-or-none for DDP, stale holders taken over, a clear
timeout), and a multiprocess run on two declared devices (`runtime.visible_devices: [0, 1]` on
this CPU machine) in which two GPU steps overlap and record different device ids.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from synthfactory import devices
from synthfactory.definitions import build_definitions
from synthfactory.fanout import fan_out_plan, run_processes, split_keys
from synthfactory.params import parse_params
from synthfactory.planning import PlannedRun, plan_runs
from tests.support import PROJECT_ROOT, tiny_params

UPSTREAM = ["real_images", "prompts", "generator"]


def _hold_lease(lease_dir: str, ids: list[str], ready: multiprocessing.synchronize.Event,
                done: multiprocessing.synchronize.Event) -> None:
    devices.acquire(ids, 1, Path(lease_dir), owner="child")
    ready.set()
    done.wait(30)


def test_two_processes_racing_never_share_a_device(tmp_path: Path) -> None:
    """Eight processes race for two devices with O_EXCL files: at most one holds each."""
    script = ("import sys, time, json; from pathlib import Path; from synthfactory import devices;"
              "lease = devices.acquire(['0', '1'], 1, Path(sys.argv[1]), owner='p', timeout_s=60);"
              "print(json.dumps([lease.ids[0], lease.acquired_at])); time.sleep(0.3);"
              "import time as t; print(json.dumps(t.time())); lease.release()")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(8)]
    windows: dict[str, list[tuple[float, float]]] = {"0": [], "1": []}
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        first, second = out.strip().splitlines()
        device, start = json.loads(first)
        windows[device].append((start, json.loads(second)))
    assert windows["0"] and windows["1"]  # both devices were used
    for spans in windows.values():  # and never by two holders at once
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert not list(tmp_path.glob("gpu-*.lease"))  # all released


def test_ddp_lease_is_all_or_none_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    child = context.Process(target=_hold_lease, args=(str(tmp_path), ["1"], ready, done))
    child.start()
    try:
        assert ready.wait(60)
        # Device 1 is held: a two-device (DDP) step waits rather than holding device 0 alone.
        with pytest.raises(TimeoutError, match=r"no 2 free device\(s\).*concurrency set gpu 2"):
            devices.acquire(["0", "1"], 2, tmp_path, owner="ddp", timeout_s=0.5)
        assert not (tmp_path / "gpu-0.lease").exists()
        single = devices.acquire(["0", "1"], 1, tmp_path, owner="one")
        assert single.ids == ["0"]
        single.release()
    finally:
        child.kill()  # the holder dies without releasing: its lease is stale
        child.join()
    both = devices.acquire(["0", "1"], 2, tmp_path, owner="ddp", timeout_s=5)
    assert both.ids == ["0", "1"]
    both.release()
    with pytest.raises(ValueError, match="needs 3 device.*sees 2"):
        devices.acquire(["0", "1"], 3, tmp_path, owner="x")


def test_visible_devices_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert devices.visible_device_ids(None, 2) == ["4", "6"]
    assert devices.visible_device_ids([1], 2) == ["6"]
    with pytest.raises(ValueError, match=r"visible_devices \[2\].*CUDA_VISIBLE_DEVICES='4,6'"):
        devices.visible_device_ids([2], 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.visible_device_ids([0, 1], 0) == ["0", "1"]
    assert devices.visible_device_ids(None, 3) == ["0", "1", "2"]


def test_bad_visible_devices_name_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"runtime.visible_devices \[0, 0\]"):
        parse_params(tiny_params(tmp_path, runtime={"visible_devices": [0, 0]}))


def test_fan_out_splits_a_range_and_moves_the_rest_around_it(tmp_path: Path) -> None:
    """The whole-graph-up-to-shards run becomes upstream run → N shard chunks → nothing after."""
    assert split_keys(["a", "b", "c", "d", "e"], 2) == [("a", "b", "c"), ("d", "e")]
    assert split_keys(["a"], 4) == [("a",)]
    defs = build_definitions(parse_params(tiny_params(tmp_path)))
    graph = defs.resolve_asset_graph()
    keys = {dg.AssetKey(name) for name in [*UPSTREAM, "synthetic_shards"]}
    plan = plan_runs(graph, keys, "00000...00002")
    fanned = fan_out_plan(plan, graph, 2)
    assert [(sorted(k.to_user_string() for k in run.assets), run.partition_keys, run.step)
            for run in fanned] == [
        (sorted(UPSTREAM), (), 0),
        (["synthetic_shards"], ("00000", "00001"), 1),
        (["synthetic_shards"], ("00002",), 1)]
    assert fan_out_plan(plan, graph, 1) == plan


def test_concurrent_gpu_steps_lease_different_devices(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one shard each (`fan_out_plan` with 2 ways, run as `synthfactory run
    --fan-out 2` runs them: a process per run) with the multiprocess executor on two declared
    devices: their steps overlap in time and record devices 0 and 1, in two step processes."""
    lease_dir = tmp_path / "leases"
    raw = tiny_params(tmp_path, runtime={"device": "auto", "threads": 1,
                                         "visible_devices": [0, 1], "lease_dir": str(lease_dir)})
    config = parse_params(raw)
    upstream = build_definitions(config)
    assert dg.materialize(list(upstream.assets), selection=UPSTREAM,
                          resources=upstream.resources).success
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    home = tmp_path / "dagster_home"
    home.mkdir()
    config_text = (PROJECT_ROOT / "dagster_home" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(config_text.replace("default_limit: 1", "default_limit: 2"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SYNTHFACTORY_PARAMS", str(params_file))
    runs = [PlannedRun((dg.AssetKey("synthetic_shards"),), (key,), 0) for key in ("00000", "00001")]
    run_config = {"execution": {"config": {"multiprocess": {"max_concurrent": 1}}}}
    with dg.DagsterInstance.get() as instance:
        results = run_processes(runs, params_file, run_config, instance)
    assert all(result.success for result in results)
    records, ends = {}, {}
    for result in results:
        for entry in result.entries:
            event = entry.dagster_event
            if event.event_type_value == "ASSET_MATERIALIZATION":
                records[event.partition] = {key: value.value for key, value
                                            in event.materialization.metadata.items()}
                ends[event.partition] = entry.timestamp
    assert {record["device_ids"] for record in records.values()} == {"0", "1"}
    assert all(record["device_assignment"] == "lease" and record["device"] == "cpu"
               for record in records.values())
    assert len({record["device_pid"] for record in records.values()}) == 2
    starts = {key: records[key]["device_acquired_at"] for key in records}
    a, b = sorted(records)
    assert starts[a] < ends[b] and starts[b] < ends[a], (starts, ends)  # they overlapped
    assert not list(lease_dir.glob("gpu-*.lease"))  # released when the steps ended
