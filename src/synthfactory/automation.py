"""The rebuild schedule, the params sensor and declarative automation of the graph.

The graph holds assets of several partitions definitions (shards, distillation cells, experts),
and one Dagster run holds one of them at most, so neither a job nor a schedule's run can rebuild
it whole. What does: an **asset backfill** of every asset and partition, which the daemon runs
in the graph's order across definitions (all shards in one run, a run per cell and per expert,
each as soon as its upstream partitions exist). Dagster 1.13 launches backfills from sensors
only (`RunRequest.for_asset_graph_subset`; a schedule's run requests become plain runs), so:

- `rebuild_schedule` is a sensor that fires on `automation.schedule.cron` (in its timezone): at
  the first tick after each cron time it requests the backfill of the whole graph (once per cron
  time, like a schedule; a missed time is caught up once). Off unless `enabled`.
- `params_change_sensor` re-reads the params file on every tick and requests a backfill of
  `real_images+` when the class list changed, `prompts+` when only the prompt config did. When
  the file now implies other partitions (shards, cells, experts) than the code location was
  loaded with, it skips and asks for a reload first. The backfill's runs read the file when they
  start (each run loads the code location anew); Dagster drops a backfill request's run config,
  so they cannot be pinned to the values the sensor saw.
- With `automation.eager`, every asset downstream of the inputs carries
  `AutomationCondition.eager()`: when its upstream data changes (a backfill of shards, a new
  judge, a cell added to the table), Dagster's automation sensor refreshes it.

`synthfactory run` splits the same selections into runs itself (`synthfactory.planning`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from synthfactory.ops.data.prompts import shard_count, shard_key
from synthfactory.ops.data.real_images import list_classes
from synthfactory.params import ProjectConfig, config_digest, load_params
from synthfactory.runguard import runtime_tags

if TYPE_CHECKING:  # Dagster's asset graph type is not exported
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

REBUILD_SCHEDULE = "rebuild_schedule"
PARAMS_SENSOR = "params_change_sensor"
SHARDS = dg.AssetKey("synthetic_shards")
# The inputs of the graph: automation starts below them (they change when a person says so).
ROOTS = {"real_images", "prompts"}


def shard_keys(config: ProjectConfig) -> list[str]:
    """The shard partition keys the params imply: classes × images per class / shard size."""
    params = config.params
    source = params.real_images
    n_classes = len(list_classes(source.source, source.root, source.class_names))
    n_records = n_classes * params.prompts.images_per_class
    return [shard_key(index)
            for index in range(shard_count(n_records, params.synthetic_shards.shard_size))]


def all_shards_tags(keys: Sequence[str]) -> dict[str, str]:
    """Run tags that make one run materialize every shard partition (a single-run range)."""
    return {"dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1]}


def backfill_request(graph: BaseAssetGraph, keys: Iterable[dg.AssetKey],
                     tags: dict[str, str]) -> dg.RunRequest:
    """A request for one asset backfill of `keys` with every partition of each: the daemon runs
    it in the graph's order across partitions definitions, each asset's runs as its
    `BackfillPolicy` says."""
    # AssetGraphSubset has no public constructor yet (RunRequest.for_asset_graph_subset, the
    # documented way to request a backfill from a sensor, takes one).
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

    subset = AssetGraphSubset.from_asset_keys(list(keys), graph)
    return dg.RunRequest.for_asset_graph_subset(subset, tags=tags)


def partition_keys_by_asset(graph: BaseAssetGraph) -> dict[str, list[str]]:
    """Each partitioned asset's keys: what a params change must not alter without a reload."""
    return {key.to_user_string(): list(graph.get(key).partitions_def.get_partition_keys())
            for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None}


def build_rebuild_schedule(config: ProjectConfig) -> dg.SensorDefinition:
    """The rebuild on `automation.schedule.cron` (a sensor: see the module docstring); running
    only when `enabled`."""
    from dagster._utils.schedules import get_latest_completed_cron_tick  # Dagster's cron rules

    settings = config.automation.schedule
    status = (dg.DefaultSensorStatus.RUNNING if settings.enabled
              else dg.DefaultSensorStatus.STOPPED)

    @dg.sensor(name=REBUILD_SCHEDULE, minimum_interval_seconds=60, default_status=status,
               asset_selection=dg.AssetSelection.all(),
               description=f"Rebuild the whole graph (one backfill of every asset and "
                           f"partition) on '{settings.cron}' ({settings.timezone}).")
    def rebuild_schedule(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        """At the first tick after a cron time, one backfill of everything, tagged with that time.

        The cursor is the last cron time handled. As a schedule does, it does not fire for a
        time that passed before it was turned on: the first evaluation, and the first after
        being turned on again, only record the time.
        """
        now = dt.datetime.now(dt.timezone.utc)
        latest = get_latest_completed_cron_tick(settings.cron, now, settings.timezone)
        handled = dt.datetime.fromisoformat(context.cursor) if context.cursor else None
        if handled is not None and handled >= latest:
            return dg.SkipReason(f"no cron time of '{settings.cron}' since {handled.isoformat()}")
        context.update_cursor(latest.isoformat())
        started = context.last_sensor_start_time
        if handled is None or (started is not None and latest.timestamp() < started):
            return dg.SkipReason(f"recorded the cron time {latest.isoformat()}, which passed "
                                 "before the sensor was turned on; it rebuilds at the next one")
        graph = context.repository_def.asset_graph
        return backfill_request(graph, graph.materializable_asset_keys,
                                tags={"synthfactory/rebuild": latest.isoformat(),
                                      **runtime_tags(config.executor.max_runtime_s)})

    return rebuild_schedule


def watched_state(config: ProjectConfig) -> dict[str, str]:
    """Digests of what the sensor watches: the class list and the prompt config."""
    params = config.params
    source = params.real_images
    classes = list_classes(source.source, source.root, source.class_names)
    return {"classes": config_digest(classes), "prompts": params.digest("prompts")}


# How the sensor rebuilds the graph from the params it re-reads (definitions.build_definitions).
DefinitionsBuilder = Callable[[ProjectConfig, str | Path], dg.Definitions]


def build_params_sensor(config: ProjectConfig, params_path: str | Path,
                        build_definitions: DefinitionsBuilder) -> dg.SensorDefinition:
    """The sensor that watches `params_path` (and the class folders it names) for changes.

    `build_definitions` is the code location's builder, passed in by `definitions.py` (which
    imports this module): the sensor builds the graph of the changed params with it to see
    whether the partitions moved, and this module never imports the code location.
    """
    settings = config.automation.sensor
    status = (dg.DefaultSensorStatus.RUNNING if settings.enabled
              else dg.DefaultSensorStatus.STOPPED)

    @dg.sensor(name=PARAMS_SENSOR, minimum_interval_seconds=settings.interval_seconds,
               default_status=status, asset_selection=dg.AssetSelection.all(),
               description="Backfills what is below the inputs when the class list or the "
                           "prompt config changes.")
    def params_change_sensor(context: dg.SensorEvaluationContext
                             ) -> dg.RunRequest | dg.SkipReason:
        """Compare the watched digests with the cursor; request a backfill of the affected
        assets on a change.

        The first tick only records the state (nothing changed yet). A change that alters the
        partitions (the shard count, the cells or experts) needs the code location reloaded
        first (partitions are fixed when it loads): the sensor then skips with that instruction
        and fires after the reload.
        """
        current = load_params(params_path)
        state = watched_state(current)
        previous = json.loads(context.cursor) if context.cursor else None
        if previous is None:
            context.update_cursor(json.dumps(state))
            return dg.SkipReason(f"recorded the state of {params_path}: {state}")
        if previous == state:
            return dg.SkipReason("class list and prompt config unchanged")
        graph = context.repository_def.asset_graph
        loaded = partition_keys_by_asset(graph)
        wanted = partition_keys_by_asset(
            build_definitions(current, params_path).resolve_asset_graph())
        if wanted != loaded:
            moved = sorted(name for name in {*loaded, *wanted}
                           if loaded.get(name) != wanted.get(name))
            return dg.SkipReason(
                f"{params_path} now gives other partitions of {', '.join(moved)} than the code "
                "location was loaded with: reload the code location (UI: Deployment → Reload) "
                "and the sensor starts the backfill")
        changed = sorted(key for key in state if state[key] != previous[key])
        root = "real_images" if "classes" in changed else "prompts"
        context.update_cursor(json.dumps(state))
        return backfill_request(
            graph, dg.AssetSelection.assets(root).downstream().resolve(graph),
            tags={"synthfactory/changed": ",".join(changed),
                  "synthfactory/params_digest": current.params.digest(
                      *type(current.params).model_fields),
                  **runtime_tags(current.executor.max_runtime_s)})

    return params_change_sensor


def with_eager_automation(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets, with `AutomationCondition.eager()` on everything below the graph's inputs.

    `synthetic_shards` is left to backfills, the schedule and the sensor: regenerating every
    shard is a decision, not a reaction.
    """
    result = []
    for assets_def in assets:
        names = {key.to_user_string() for key in assets_def.keys}
        if names & ROOTS or SHARDS in assets_def.keys:
            result.append(assets_def)
        else:
            result.append(assets_def.with_attributes(
                automation_condition=dg.AutomationCondition.eager()))
    return result
