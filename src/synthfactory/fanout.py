"""`synthfactory run --fan-out N`: spread a partition range over N GPUs at once.

A shard range is one run and one step (`BackfillPolicy.single_run()`: the generator loads once
for the whole range), so by itself it uses one GPU. Fanned out, the range becomes N runs of
contiguous sub-ranges that run at the same time: N steps, each on its own GPU (a device lease on
one machine, a Ray task with `num_gpus` on a cluster), each loading the generator once. What
the range's run also held is split off around it: the unpartitioned assets it depends on run
first, those that depend on it after (so nothing is materialized twice).

Runs of one step of the plan (these chunks, and the one-key runs of cells and experts) run
concurrently; steps still run in order, and after a failed step the later ones do not start,
as in `synthfactory.planning.execute_plan`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import dagster as dg

from synthfactory.planning import PlannedRun, PlanResult, execute_in_processes


def split_keys(keys: Sequence[str], ways: int) -> list[tuple[str, ...]]:
    """`keys` in at most `ways` contiguous chunks of near-equal size (larger ones first)."""
    count = min(ways, len(keys))
    size, extra = divmod(len(keys), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        chunks.append(tuple(keys[start:end]))
        start = end
    return chunks


def fan_out_plan(plan: Sequence[PlannedRun], graph: Any, ways: int) -> list[PlannedRun]:
    """The plan with every run of several partition keys split into up to `ways` concurrent runs
    (one step); its unpartitioned assets move to a run before (upstream of the range) or after
    (downstream of it). Steps are renumbered in order."""
    if ways < 1:
        raise ValueError(f"--fan-out {ways}: give 1 (no fan-out) or more")
    result: list[PlannedRun] = []
    step = -1
    for _, runs in groupby(plan, key=lambda run: run.step):
        runs = list(runs)
        if ways == 1 or len(runs) != 1 or len(runs[0].partition_keys) < 2:
            step += 1
            result += [PlannedRun(run.assets, run.partition_keys, step) for run in runs]
            continue
        run = runs[0]
        partitioned = [key for key in run.assets if graph.get(key).partitions_def is not None]
        downstream: set[dg.AssetKey] = set(partitioned)
        before, after = [], []
        for key in run.assets:  # topological order: parents are classified first
            if key in downstream:
                continue
            if any(parent in downstream for parent in graph.get(key).parent_keys):
                downstream.add(key)
                after.append(key)
            else:
                before.append(key)
        if before:
            step += 1
            result.append(PlannedRun(tuple(before), (), step))
        step += 1
        result += [PlannedRun(tuple(partitioned), chunk, step)
                   for chunk in split_keys(run.partition_keys, ways)]
        if after:
            step += 1
            result.append(PlannedRun(tuple(after), (), step))
    return result


def execute_concurrently(plan: Sequence[PlannedRun], execute: Callable[[PlannedRun], Any],
                         on_start: Callable[[int, PlannedRun], None] | None = None,
                         concurrent: Callable[[Sequence[PlannedRun]], list[Any]] | None = None,
                         ) -> PlanResult:
    """Run the plan step by step: a step of one run with `execute(run)`, a step of several runs
    with `concurrent(runs)`, which runs them at the same time (default: `execute` one after the
    other). A failed run stops the later steps."""
    results: list[tuple[PlannedRun, Any]] = []
    failed = False
    number = 0
    for _, group in groupby(plan, key=lambda run: run.step):
        runs = list(group)
        if failed:
            results += [(run, None) for run in runs]
            continue
        for offset, run in enumerate(runs):
            if on_start is not None:
                on_start(number + offset, run)
        number += len(runs)
        if len(runs) > 1 and concurrent is not None:
            outcomes = concurrent(runs)
        else:
            outcomes = [execute(run) for run in runs]
        results += list(zip(runs, outcomes, strict=True))
        failed = not all(outcome.success for outcome in outcomes)
    return PlanResult(results)


class StoredRun:
    """A finished run read back from the instance: reads like `dg.execute_job`'s result."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.run_id = run_id
        run = instance.get_run_by_id(run_id)
        self.success = run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        self.entries = [entry for entry in instance.all_logs(run_id) if entry.dagster_event]
        self.all_events = [entry.dagster_event for entry in self.entries]

    def get_asset_materialization_events(self) -> list[Any]:
        """The run's materialization events."""
        return [event for event in self.all_events
                if event.event_type_value == "ASSET_MATERIALIZATION"]

    def get_asset_check_evaluations(self) -> list[Any]:
        """The run's check evaluations."""
        return [event.event_specific_data for event in self.all_events
                if event.event_type_value == "ASSET_CHECK_EVALUATION"]


JOB_FUNCTION = "synthfactory.definitions:job_for_params"


def run_processes(runs: Sequence[PlannedRun], params_path: Path, run_config: dict[str, Any],
                  instance: dg.DagsterInstance, job_function: str = JOB_FUNCTION
                  ) -> list[StoredRun]:
    """Each run in a process of its own (`python -m synthfactory.fanout`), all at once; the
    run's job is `job_function(params_path, *asset_names)` (`module:function`).

    Processes, not threads: Dagster's run setup configures logging, and two runs set up in
    threads of one process can deadlock there (seen with dagster 1.13: both threads stuck in
    `logging.config.dictConfig`)."""
    with tempfile.TemporaryDirectory(prefix="fan-out-") as scratch:
        started = []
        for index, run in enumerate(runs):
            id_file = Path(scratch) / f"run-{index}"
            command = [sys.executable, "-m", "synthfactory.fanout", job_function,
                       str(params_path.resolve()),
                       json.dumps(run.tags), json.dumps(run_config), str(id_file),
                       *(key.to_user_string() for key in run.assets)]
            started.append((subprocess.Popen(command), id_file))
        results = []
        for process, id_file in started:
            process.wait()
            if not id_file.is_file():
                raise RuntimeError(f"a fanned-out run's process exited with code "
                                   f"{process.returncode} before its run started (see above)")
            results.append(StoredRun(instance, id_file.read_text().strip()))
    return results


def _run_one(argv: Sequence[str]) -> int:
    """`python -m synthfactory.fanout MODULE:FUNCTION PARAMS TAGS RUN_CONFIG ID_FILE ASSET...`:
    one run."""
    job_function, params, tags, run_config, id_file, *assets = argv
    module, _, function = job_function.partition(":")
    # Importing the definitions module reads this file (else ./params.yaml).
    os.environ.setdefault("SYNTHFACTORY_PARAMS", params)
    job = dg.build_reconstructable_job(module, function, reconstructable_args=(params, *assets),
                                       reconstructor_working_directory=os.getcwd())
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, run_config=json.loads(run_config),
                                tags=json.loads(tags))
    Path(id_file).write_text(result.run_id)
    return 0 if result.success else 1


def visible_gpus(config: Any) -> int:
    """How many GPUs `--fan-out auto` spreads over: the Ray cluster's (executor.kind ray), else
    this machine's visible ones (CUDA_VISIBLE_DEVICES, runtime.visible_devices, torch's count);
    at least 1."""
    if config.executor.kind == "ray":
        import ray

        from synthfactory.ray_executor import connect  # deferred: imports ray (an extra)

        connect(config.executor.ray.address)
        return max(1, int(ray.cluster_resources().get("GPU", 0)))
    from synthfactory.devices import visible_device_ids  # deferred: keeps the CLI's load light

    count = 0
    if config.runtime.visible_devices is None and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return max(1, len(visible_device_ids(config.runtime.visible_devices, count)))


def gpu_pool_limit(instance: dg.DagsterInstance) -> int | None:
    """The instance's limit of the `gpu` pool (None: unlimited or unknown)."""
    try:
        info = instance.event_log_storage.get_concurrency_info("gpu")
    except Exception:  # storages without pools, or an API that moved: we only use it to warn
        return None
    return info.slot_count if info.slot_count is not None else None


def resolve_ways(fan_out: str | None, config: Any) -> int:
    """`--fan-out` as a number: None → 1, `auto` → the visible GPUs, else a positive int."""
    if fan_out is None:
        return 1
    if fan_out == "auto":
        return visible_gpus(config)
    if not fan_out.isdigit() or int(fan_out) < 1:
        raise ValueError(f"--fan-out {fan_out!r}: give a number of GPUs (1 or more) or auto")
    return int(fan_out)


def run_fanned(config: Any, params_path: Path, plan: Sequence[PlannedRun], graph: Any,
               instance: dg.DagsterInstance, run_config: dict[str, Any], processes: int,
               fan_out: str | None, *, checks: bool = True,
               tags: dict[str, str] | None = None) -> PlanResult:
    """`synthfactory run` with step processes of their own: the multiprocess executor
    (`processes` at once per run) or Ray (executor.kind ray), each partition range fanned out
    over `fan_out` concurrent runs, with the asset checks unless `checks` is False and the
    CLI's run tags (the time limit). Prints each run as it starts."""
    ways = resolve_ways(fan_out, config)
    ray = config.executor.kind == "ray"
    if ways > 1 and processes == 1 and not ray:
        raise ValueError(f"--fan-out {fan_out}: every GPU step needs a process of its own; add "
                         f"--processes {max(2, ways)} or set executor.kind: ray")
    if instance.is_ephemeral:
        raise ValueError("step processes report to a persistent Dagster instance: run from the "
                         "project root (it has dagster_home/) or set DAGSTER_HOME")
    if not ray:
        run_config = {**run_config,
                      "execution": {"config": {"multiprocess": {"max_concurrent": processes}}}}
    limit = gpu_pool_limit(instance)
    if ways > 1 and limit is not None and limit < ways:
        print(f"synthfactory: warning: the instance's gpu pool allows {limit} GPU step(s) at once,"
              f" fewer than --fan-out {ways}: raise it with `dagster instance concurrency set "
              f"gpu {ways}`", flush=True)
    fanned = fan_out_plan(plan, graph, ways)

    def announce(number: int, run: PlannedRun) -> None:
        print(f"run {number + 1}/{len(fanned)}: {run.describe()}", flush=True)

    def execute(run: PlannedRun) -> dg.JobExecutionResult:
        return execute_in_processes(run, params_path, instance, run_config, checks=checks,
                                    tags=tags)

    return execute_concurrently(
        fanned, execute, announce,
        concurrent=lambda runs: run_processes(runs, params_path, run_config, instance))


if __name__ == "__main__":
    sys.exit(_run_one(sys.argv[1:]))
