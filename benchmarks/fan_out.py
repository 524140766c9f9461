"""Generation of 8 shards fanned out over 2 devices against 1 (prints JSON).

Two settings, each timed as one run of all 8 shards (`--fan-out 1`) against two concurrent runs
of 4 (`--fan-out 2`), one torch thread per step:

- `ray`: a local Ray cluster (a head without GPUs, a worker node with 2 CPUs and 2 declared
  GPUs): every step a Ray task with one GPU;
- `multiprocess`: the default executor with `runtime.visible_devices: [0, 1]`: every step a
  process that leases its own device.

The upstream assets are made once in-process; every timed run starts from a copy of them.
Besides the wall time of the whole fan-out, the JSON gives the longest `synthetic_shards` step
(Dagster's step duration): the wall time less the step is the fixed cost of a run (its process,
the step's process, imports, the generator's load), which runs in parallel but does not shrink,
so the wall-time ratio approaches the step ratio only when the shards are large. On this
machine's tiny DDPM the shipped shard (250 images × 25 steps) is ~2 s of work against ~9 s of
fixed cost; the defaults here (25 images × 1000 steps) give each shard ~4× that work, still
seconds where a text-to-image shard on a GPU takes minutes.
The machine is shared: one timing of a ratio moves by ±0.1 from run to run, so each setting is
timed `--repeats` times (interleaved) and the JSON gives each repeat, the median and the range.
On a machine with two GPUs, `runtime.visible_devices: [0, 1]` leases the real devices 0 and 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthfactory.definitions import build_definitions  # noqa: E402
from synthfactory.fanout import fan_out_plan, run_processes  # noqa: E402
from synthfactory.params import parse_params  # noqa: E402
from synthfactory.planning import plan_runs  # noqa: E402
from tests.platform.ray_cluster import LocalRayCluster  # noqa: E402
from tests.support import tiny_params  # noqa: E402

UPSTREAM = ["real_images", "prompts", "generator"]
JOB = "tests.platform.test_ray_executor:job_without_checks"


def bench_params(root: Path, steps: int, **overrides: dict) -> dict:
    """Tiny params with 8 shards of 25 images (10 classes × 20), `steps` sampling steps each."""
    return tiny_params(root, prompts={"images_per_class": 20, "guidance": [1.0, 2.0]},
                       synthetic_shards={"shard_size": 25, "steps": steps, "batch_size": 25},
                       **overrides)


def longest_step(instance: dg.DagsterInstance, run_ids: list[str]) -> float:
    """The longest `synthetic_shards` step of the runs, in seconds (Dagster's step stats)."""
    return max(stat.end_time - stat.start_time for run_id in run_ids
               for stat in instance.get_run_step_stats(run_id)
               if stat.step_key == "synthetic_shards")


def timed(root: Path, upstream: Path, raw: dict, ways: int, home: Path) -> tuple[float, float]:
    """Seconds to make the 8 shards from a copy of the upstream outputs in `ways` runs, and the
    longest shard step's seconds."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in UPSTREAM:
        shutil.copytree(upstream / "data" / name, root / "data" / name)
    raw = {**raw, "store": {"root": str(root / "data")}}
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    os.environ["SYNTHFACTORY_PARAMS"] = str(params_file)
    defs = build_definitions(parse_params(raw))
    graph = defs.resolve_asset_graph()
    plan = fan_out_plan(plan_runs(graph, {dg.AssetKey("synthetic_shards")}), graph, ways)
    run_config = ({} if raw.get("executor", {}).get("kind") == "ray" else
                  {"execution": {"config": {"multiprocess": {"max_concurrent": 1}}}})
    started = time.perf_counter()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        results = run_processes(plan, params_file, run_config, instance, job_function=JOB)
        seconds = time.perf_counter() - started
        if not all(result.success for result in results):
            raise RuntimeError(f"a run failed in {root}")
        return seconds, longest_step(instance, [result.run_id for result in results])


def ratios(one: tuple[float, float], two: tuple[float, float]) -> dict[str, float]:
    """Wall and step seconds of one way and two ways, and their ratios."""
    return {"one_s": round(one[0], 1), "two_s": round(two[0], 1),
            "speedup": round(one[0] / two[0], 2), "one_step_s": round(one[1], 1),
            "two_step_s": round(two[1], 1), "step_speedup": round(one[1] / two[1], 2)}


def summary(timings: list[dict[str, float]]) -> dict[str, Any]:
    """Each repeat's timings, and the median and range of the two ratios over the repeats."""
    out: dict[str, Any] = {"repeats": timings}
    for ratio in ("speedup", "step_speedup"):
        values = [timing[ratio] for timing in timings]
        out[ratio] = {"median": round(statistics.median(values), 2), "min": min(values),
                      "max": max(values)}
    return out


def main() -> None:
    """Time both settings and print their ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000, help="sampling steps per image")
    parser.add_argument("--repeats", type=int, default=3,
                        help="times each setting is timed (the JSON gives each and the median)")
    parser.add_argument("--settings", nargs="+", choices=["multiprocess", "ray"],
                        default=["multiprocess", "ray"], help="which settings to time")
    args = parser.parse_args()
    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="fan-out-bench-"))
    home = work / "home"
    home.mkdir()
    text = (ROOT / "dagster_home" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(text.replace("default_limit: 1", "default_limit: 2"))
    os.environ["DAGSTER_HOME"] = str(home)
    upstream = work / "upstream"
    raw = bench_params(upstream, args.steps)
    defs = build_definitions(parse_params(raw))
    assert dg.materialize(list(defs.assets), selection=UPSTREAM, resources=defs.resources).success
    report: dict = {"benchmark": "fan_out", "shards": 8, "steps": args.steps,
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    local = bench_params(work, args.steps, runtime={
        "device": "auto", "threads": 1, "visible_devices": [0, 1],
        "lease_dir": str(work / "leases")})
    cluster = LocalRayCluster([(1, 0), (2, 2)]) if "ray" in args.settings else None
    runs: dict[str, list[dict[str, float]]] = {setting: [] for setting in args.settings}
    try:
        settings = {"multiprocess": local}
        if cluster is not None:
            cluster.start()
            settings["ray"] = bench_params(
                work, args.steps, runtime={"device": "auto", "threads": 1},
                executor={"kind": "ray", "ray": {"address": cluster.address,
                                                 "working_dir": str(ROOT)}})
        # Repeats interleave the settings, so a slow spell of the shared machine falls on both.
        for repeat in range(args.repeats):
            for setting in args.settings:
                one = timed(work / f"{setting}-{repeat}-1", upstream, settings[setting], 1, home)
                two = timed(work / f"{setting}-{repeat}-2", upstream, settings[setting], 2, home)
                runs[setting].append(ratios(one, two))
    finally:
        if cluster is not None:
            cluster.stop()
    for setting, timings in runs.items():
        report[setting] = summary(timings)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["cpu_count"] = os.cpu_count()
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
