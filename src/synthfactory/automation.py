"""Jobs, the rebuild schedule, the params sensor and declarative automation of the graph.

- `rebuild` (job) materializes every asset, all shard partitions in one run.
- `rebuild_schedule` runs it on `automation.schedule.cron` (off unless `enabled`).
- `params_change_sensor` re-reads the params file on every tick and starts a run when the class
  list (the classes of `real_images`) or the prompt config changes: `real_images+` when the
  classes changed, `prompts+` when only the prompt config did. The run carries the file's current
  values as the `params` resource config, so it uses what the file says now.
- With `automation.eager`, every asset downstream of the inputs carries
  `AutomationCondition.eager()`: when its upstream data changes (a backfill of shards, a new
  judge), Dagster's automation sensor refreshes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from synthfactory.ops.data.prompts import shard_count, shard_key
from synthfactory.ops.data.real_images import list_classes
from synthfactory.params import ProjectConfig, config_digest, load_params

REBUILD_JOB = "rebuild"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
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
    """Run tags that make one run materialize every shard partition (a single-run backfill)."""
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def rebuild_job() -> dg.UnresolvedAssetJobDefinition:
    """Every asset, every shard partition."""
    return dg.define_asset_job(REBUILD_JOB, selection=dg.AssetSelection.all(),
                               description="Materialize the whole graph, all shard partitions.")


def build_rebuild_schedule(config: ProjectConfig,
                           job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """The rebuild schedule on `automation.schedule.cron`; running only when `enabled`."""
    settings = config.automation.schedule
    tags = all_shards_tags(shard_keys(config))
    status = (dg.DefaultScheduleStatus.RUNNING if settings.enabled
              else dg.DefaultScheduleStatus.STOPPED)

    @dg.schedule(name="rebuild_schedule", cron_schedule=settings.cron, job=job,
                 execution_timezone=settings.timezone, default_status=status,
                 description=f"Rebuild the whole graph on '{settings.cron}' "
                             f"({settings.timezone}).")
    def rebuild_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        """One run of every asset and every shard, keyed by the scheduled time."""
        return dg.RunRequest(run_key=context.scheduled_execution_time.isoformat(), tags=tags)

    return rebuild_schedule


def watched_state(config: ProjectConfig) -> dict[str, str]:
    """Digests of what the sensor watches: the class list and the prompt config."""
    params = config.params
    source = params.real_images
    classes = list_classes(source.source, source.root, source.class_names)
    return {"classes": config_digest(classes), "prompts": params.digest("prompts")}


def build_params_sensor(config: ProjectConfig, params_path: str | Path) -> dg.SensorDefinition:
    """The sensor that watches `params_path` (and the class folders it names) for changes."""
    settings = config.automation.sensor
    loaded_shards = shard_keys(config)
    status = (dg.DefaultSensorStatus.RUNNING if settings.enabled
              else dg.DefaultSensorStatus.STOPPED)

    @dg.sensor(name="params_change_sensor", minimum_interval_seconds=settings.interval_seconds,
               default_status=status, asset_selection=dg.AssetSelection.all(),
               description="Starts a run when the class list or the prompt config changes.")
    def params_change_sensor(context: dg.SensorEvaluationContext
                             ) -> dg.RunRequest | dg.SkipReason:
        """Compare the watched digests with the cursor; request the affected assets on a change.

        The first tick only records the state (nothing changed yet). A change that alters the
        number of shards needs the code location reloaded first (the partitions are fixed when
        it loads): the sensor then skips with that instruction and fires after the reload.
        """
        current = load_params(params_path)
        state = watched_state(current)
        previous = json.loads(context.cursor) if context.cursor else None
        if previous is None:
            context.update_cursor(json.dumps(state))
            return dg.SkipReason(f"recorded the state of {params_path}: {state}")
        if previous == state:
            return dg.SkipReason("class list and prompt config unchanged")
        shards = shard_keys(current)
        if shards != loaded_shards:
            return dg.SkipReason(
                f"{params_path} now gives {len(shards)} shard partitions, the code location was "
                f"loaded with {len(loaded_shards)}: reload the code location (UI: Deployment → "
                "Reload) and the sensor starts the run")
        changed = sorted(key for key in state if state[key] != previous[key])
        root = "real_images" if "classes" in changed else "prompts"
        context.update_cursor(json.dumps(state))
        return dg.RunRequest(
            run_key=f"{state['classes']}-{state['prompts']}",
            asset_selection=list(dg.AssetSelection.assets(root).downstream().resolve(
                context.repository_def.asset_graph)),
            run_config={"resources": {"params": {"config": current.params.model_dump()}}},
            tags={**all_shards_tags(shards), "synthfactory/changed": ",".join(changed)})

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
