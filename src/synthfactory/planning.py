"""The runs of a selection: how `synthfactory run` (and the tests) materialize assets that Dagster
cannot hold in one run.

A Dagster run materializes assets of at most one partitions definition (`define_asset_job`
over two fails: "Failed to resolve asset job"; so does `dg.materialize`). The graph has three:
the shards (`synthetic_shards`, `shard_scores`, `refined_shards`: whatever is partitioned like
them), the cells of the distillation table (`distilled_set`, `classifier_distilled`) and the
experts (`expert_trajectories`). `plan_runs` splits a selection into an ordered list of runs:

1. Walk the selection in topological order and put each asset in the earliest run that its
   upstream assets allow: an unpartitioned asset joins the run of its latest upstream asset;
   a partitioned one the first run at or after that which holds its partitions definition or
   none yet, else a new run.
2. A run materializes every key of its definition, or the range that `--partitions` names when
   the range's keys are of that definition (shard, cell and expert keys are disjoint).
3. A definition whose assets have a `BackfillPolicy` of N partitions per run (cells and
   experts: one, so that a backfill spreads them over GPUs) runs N keys per run, as the daemon's
   backfills do; those runs hold only their partitioned assets, and what is downstream of them
   waits for all of them in a later run. Single-run definitions (the shards) take the whole
   range in one run.

`execute_plan` runs a plan in order: a failed run stops the later runs (they read its outputs),
but not the other runs of the same step (other cells); `materialize_plan` does it in-process.
The daemon needs none of this: the rebuild schedule and the params sensor request one asset
backfill of the whole selection (see `synthfactory.automation`), which it orders the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

PARTITION_TAG = "dagster/partition"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class PlannedRun:
    """One run: its assets (in topological order), the partition keys it materializes (none for
    a run of unpartitioned assets) and its step in the plan (runs of one step are independent
    chunks of one definition's keys)."""

    assets: tuple[dg.AssetKey, ...]
    partition_keys: tuple[str, ...] = ()
    step: int = 0

    @property
    def tags(self) -> dict[str, str]:
        """The run tags that select its partitions: one key, or a range of several."""
        if not self.partition_keys:
            return {}
        if len(self.partition_keys) == 1:
            return {PARTITION_TAG: self.partition_keys[0]}
        return {RANGE_START: self.partition_keys[0], RANGE_END: self.partition_keys[-1]}

    def describe(self) -> str:
        """`real_images, …, synthetic_shards [00000...00002]`: what the run makes."""
        names = ", ".join(key.to_user_string() for key in self.assets)
        return f"{names} [{describe_keys(self.partition_keys)}]" if self.partition_keys else names


def describe_keys(keys: Sequence[str]) -> str:
    """`00000...00002 (00000, 00001, 00002)`: a range in the CLI's notation, the keys when few."""
    if len(keys) == 1:
        return keys[0]
    listed = f" ({', '.join(keys)})" if len(keys) <= 5 else f" ({len(keys)} keys)"
    return f"{keys[0]}...{keys[-1]}{listed}"


@dataclass
class _Step:
    partitions_def: dg.PartitionsDefinition | None
    chunked: bool
    assets: list[dg.AssetKey] = field(default_factory=list)
    partitioned: list[str] = field(default_factory=list)  # names, for messages


def plan_runs(graph: Any, selection: Iterable[dg.AssetKey],
              partitions: str | None = None) -> list[PlannedRun]:
    """The runs that materialize `selection` of the asset graph `graph`, in order (see the module
    docstring). `partitions` is `KEY` or `FIRST...LAST`, keys of one partitions definition of
    the selection; the other definitions run all their keys. A range or key that is not there is
    bad input (ValueError naming what there is)."""
    selected = set(selection)
    order = [key for key in graph.toposorted_asset_keys if key in selected]
    limits = _partitions_per_run(graph, order)
    steps: list[_Step] = []
    step_of: dict[dg.AssetKey, int] = {}
    for key in order:
        node = graph.get(key)
        low = max((step_of[parent] for parent in node.parent_keys if parent in step_of), default=0)
        definition = node.partitions_def
        chunked = definition is not None and _limit(limits, definition) is not None
        index = next((i for i in range(low, len(steps)) if _joins(steps[i], definition, chunked)),
                     None)
        if index is None:
            steps.append(_Step(definition, chunked))
            index = len(steps) - 1
        if definition is not None:
            steps[index].partitions_def = definition
            steps[index].partitioned.append(key.to_user_string())
        steps[index].assets.append(key)
        step_of[key] = index
    chosen = _chosen_keys(graph, steps, partitions)
    runs = []
    for index, step in enumerate(steps):
        if step.partitions_def is None:
            runs.append(PlannedRun(tuple(step.assets), step=index))
            continue
        keys = chosen.get(index) or tuple(step.partitions_def.get_partition_keys())
        size = (_limit(limits, step.partitions_def) or len(keys)) if step.chunked else len(keys)
        runs += [PlannedRun(tuple(step.assets), keys[start:start + size], index)
                 for start in range(0, len(keys), size)]
    return runs


def _joins(step: _Step, definition: dg.PartitionsDefinition | None, chunked: bool) -> bool:
    """Whether an asset may join a run: one partitions definition per run, and a chunked run
    (a few keys each) holds only assets of its definition."""
    if chunked or step.chunked:
        return chunked and step.chunked and step.partitions_def == definition
    return definition is None or step.partitions_def in (None, definition)


def _partitions_per_run(graph: Any, keys: Sequence[dg.AssetKey]
                        ) -> list[tuple[dg.PartitionsDefinition, int | None]]:
    """Per partitions definition, the most keys one run may take: the smallest of its assets'
    `BackfillPolicy.max_partitions_per_run` (None: single-run, the whole range; an asset
    without a policy is backfilled one partition per run by Dagster, so 1)."""
    limits: list[tuple[dg.PartitionsDefinition, int | None]] = []
    for key in keys:
        node = graph.get(key)
        if node.partitions_def is None:
            continue
        policy = node.backfill_policy
        limit = 1 if policy is None else policy.max_partitions_per_run
        for index, (definition, known) in enumerate(limits):
            if definition == node.partitions_def:
                limits[index] = (definition, limit if known is None else
                                 known if limit is None else min(known, limit))
                break
        else:
            limits.append((node.partitions_def, limit))
    return limits


def _limit(limits: list[tuple[dg.PartitionsDefinition, int | None]],
           definition: dg.PartitionsDefinition) -> int | None:
    return next(limit for known, limit in limits if known == definition)


def _chosen_keys(graph: Any, steps: list[_Step], spec: str | None) -> dict[int, tuple[str, ...]]:
    """The keys `--partitions` names, for each step of their definition."""
    if spec is None:
        return {}
    defined = [(index, step) for index, step in enumerate(steps) if step.partitions_def]
    if not defined:
        raise ValueError(f"--partitions {spec!r}: the selection has no partitioned asset")
    first, _, last = spec.partition("...")
    last = last or first
    for _, step in defined:
        keys = step.partitions_def.get_partition_keys()
        if first not in keys:
            continue
        if last not in keys or keys.index(last) < keys.index(first):
            raise ValueError(f"--partitions {spec!r}: {last!r} is not a partition after "
                             f"{first!r}; {', '.join(step.partitioned)}: {describe_keys(keys)}")
        chosen = tuple(keys[keys.index(first):keys.index(last) + 1])
        return {index: chosen for index, other in defined
                if other.partitions_def == step.partitions_def}
    described: list[str] = []
    seen: list[dg.PartitionsDefinition] = []
    for _, step in defined:
        if step.partitions_def not in seen:  # a definition may come back in a later step
            seen.append(step.partitions_def)
            described.append(f"{', '.join(step.partitioned)}: "
                             f"{describe_keys(step.partitions_def.get_partition_keys())}")
    there = "; ".join(described)
    raise ValueError(f"--partitions {spec!r}: {first!r} is not a partition of the selected "
                     f"assets; {there}")


@dataclass
class PlanResult:
    """The results of a plan's runs in order (None for a run not started: an earlier step
    failed). Reads like one run's result: `success`, `all_events`, materializations, checks."""

    runs: list[tuple[PlannedRun, Any]]

    @property
    def success(self) -> bool:
        """Every run of the plan ran and succeeded."""
        return all(result is not None and result.success for _, result in self.runs)

    @property
    def not_started(self) -> list[PlannedRun]:
        """The runs that did not start because an earlier step failed."""
        return [run for run, result in self.runs if result is None]

    @property
    def all_events(self) -> list[Any]:
        """Every event of every run, in run order."""
        return [event for result in self._results() for event in result.all_events]

    def get_asset_materialization_events(self) -> list[Any]:
        """Every materialization of every run."""
        return [event for result in self._results()
                for event in result.get_asset_materialization_events()]

    def get_asset_check_evaluations(self) -> list[Any]:
        """Every asset check evaluation of every run."""
        return [evaluation for result in self._results()
                for evaluation in result.get_asset_check_evaluations()]

    def _results(self) -> list[Any]:
        return [result for _, result in self.runs if result is not None]


def execute_plan(plan: Sequence[PlannedRun], execute: Callable[[PlannedRun], Any],
                 on_start: Callable[[int, PlannedRun], None] | None = None) -> PlanResult:
    """Run the plan in order with `execute(run) -> result`. After a failed run the later steps
    do not start (they read what it made); the other runs of its own step (other cells, other
    experts) still do."""
    results: list[tuple[PlannedRun, Any]] = []
    failed_step: int | None = None
    for number, run in enumerate(plan):
        if failed_step is not None and run.step > failed_step:
            results.append((run, None))
            continue
        if on_start is not None:
            on_start(number, run)
        result = execute(run)
        results.append((run, result))
        if not result.success and failed_step is None:
            failed_step = run.step
    return PlanResult(results)


def materialize_plan(defs: dg.Definitions, selection: Iterable[str | dg.AssetKey] | None = None,
                     partitions: str | None = None, *, instance: dg.DagsterInstance | None = None,
                     run_config: dict[str, Any] | None = None, checks: bool = True,
                     raise_on_error: bool = True,
                     loggers: dict[str, dg.LoggerDefinition] | None = None,
                     on_start: Callable[[int, PlannedRun], None] | None = None,
                     tags: dict[str, str] | None = None) -> PlanResult:
    """Materialize `selection` (asset keys or names; default: everything) of `defs` in this
    process, run by run as `plan_runs` orders them — what `synthfactory run` does, and how the
    tests run the graph (`dg.materialize` cannot take two partitions definitions). With
    `checks`, the selected assets' checks run in their runs: a failed blocking check fails its
    run, so the assets downstream of it (in that run and in the later steps) do not run.
    `tags` are added to every run's tags (the time limit, the invocation)."""
    graph = defs.resolve_asset_graph()
    keys = (graph.get_all_asset_keys() if selection is None
            else {dg.AssetKey.from_user_string(key) if isinstance(key, str) else key
                  for key in selection})
    plan = plan_runs(graph, keys, partitions)
    job = dg.Definitions(assets=list(defs.assets),
                         asset_checks=list(defs.asset_checks or []) if checks else [],
                         resources=defs.resources, loggers=loggers,
                         ).resolve_implicit_global_asset_job_def()

    def execute(run: PlannedRun, on: dg.DagsterInstance) -> Any:
        return job.execute_in_process(instance=on, tags={**(tags or {}), **run.tags},
                                      run_config=run_config,
                                      raise_on_error=raise_on_error,
                                      asset_selection=list(run.assets))

    if instance is not None:
        return execute_plan(plan, lambda run: execute(run, instance), on_start)
    with dg.DagsterInstance.ephemeral() as ephemeral:  # one for all runs, as dg.materialize's
        return execute_plan(plan, lambda run: execute(run, ephemeral), on_start)


def execute_in_processes(run: PlannedRun, params_path: Path, instance: dg.DagsterInstance,
                         run_config: dict[str, Any], *, checks: bool = True,
                         tags: dict[str, str] | None = None) -> dg.JobExecutionResult:
    """One planned run whose steps run in processes of their own (the multiprocess executor, or
    Ray workers): each rebuilds the run's job from the params file (its full path), with the
    assets' checks unless `checks` is False, tagged with `tags` and the run's own tags."""
    job = dg.build_reconstructable_job(
        "synthfactory.definitions", "job_for_params" if checks else "job_for_params_without_checks",
        reconstructable_args=(str(params_path.resolve()),
                              *(key.to_user_string() for key in run.assets)))
    return dg.execute_job(job, instance, run_config=run_config, tags={**(tags or {}), **run.tags})
