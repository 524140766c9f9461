"""The rebuild schedule, the params sensor and declarative automation, through Dagster's helpers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from synthfactory.definitions import build_definitions
from synthfactory.params import ParamsError, load_params, parse_params
from tests.support import tiny_params

DOWNSTREAM_OF_PROMPTS = {"prompts", "synthetic_shards", "shard_scores", "filtered_set",
                         "expert_trajectories", "distilled_set",
                         "classifier_synthetic", "classifier_filtered", "classifier_distilled",
                         "classifier_mixed", "classifier_scaling", "eval_report"}


def _write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_schedule_is_off_by_default_and_rebuilds_every_shard_on_the_cron(tmp_path: Path) -> None:
    defs = build_definitions(parse_params(tiny_params(tmp_path)))
    schedule = defs.resolve_schedule_def("rebuild_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "rebuild"
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 22, 3, 0, tzinfo=dt.timezone.utc))
    data = schedule.evaluate_tick(context)
    (request,) = data.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "00000"
    assert request.tags["dagster/asset_partition_range_end"] == "00002"
    assert request.run_key == "2026-11-22T03:00:00+00:00"

    enabled = build_definitions(parse_params(tiny_params(
        tmp_path, automation={"schedule": {"cron": "30 1 * * 1", "enabled": True}})))
    schedule = enabled.resolve_schedule_def("rebuild_schedule")
    assert schedule.cron_schedule == "30 1 * * 1"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with pytest.raises(ParamsError, match="automation.schedule.cron"):
        parse_params({"automation": {"schedule": {"cron": "every night"}}})


def test_sensor_starts_a_run_when_the_prompt_config_or_class_list_changes(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    for name in ("cats", "dogs"):
        (folder / name).mkdir(parents=True)
    raw = tiny_params(tmp_path, real_images={"source": "imagefolder", "root": str(folder)},
                      prompts={"templates": ["a photo of {name}"], "images_per_class": 10})
    params_file = _write(tmp_path / "params.yaml", raw)
    defs = build_definitions(load_params(params_file), params_file)
    sensor = defs.resolve_sensor_def("params_change_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    def tick(cursor: str | None) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                              sensor_name="params_change_sensor")
            result = sensor.evaluate_tick(context)
        requests = result.run_requests or []
        return (requests[0] if requests else dg.SkipReason(result.skip_message)), result.cursor

    first, cursor = tick(None)  # the first tick only records the state
    assert isinstance(first, dg.SkipReason) and cursor
    unchanged, same = tick(cursor)
    assert isinstance(unchanged, dg.SkipReason) and "unchanged" in unchanged.skip_message

    # A new template: the prompts and everything below them, with the file's values as config.
    raw["prompts"]["templates"] = ["a photo of a {name}, outdoors"]
    _write(params_file, raw)
    request, after_prompts = tick(same)
    assert isinstance(request, dg.RunRequest) and after_prompts != same
    assert {k.to_user_string() for k in request.asset_selection} == DOWNSTREAM_OF_PROMPTS
    config = request.run_config["resources"]["params"]["config"]
    assert config["prompts"]["templates"] == ["a photo of a {name}, outdoors"]
    assert request.tags["synthfactory/changed"] == "prompts"
    dg.validate_run_config(defs.resolve_job_def("rebuild"), request.run_config)

    # A new class folder changes the class list: real_images and everything below it; the
    # shard count changes (3 classes × 10 / 25 → 2 shards, the location has 1): reload first.
    (folder / "owls").mkdir()
    skipped, kept_cursor = tick(after_prompts)
    assert isinstance(skipped, dg.SkipReason) and "reload the code location" in skipped.skip_message
    assert kept_cursor == after_prompts  # so the run starts after the reload
    reloaded = build_definitions(load_params(params_file), params_file)
    sensor = reloaded.resolve_sensor_def("params_change_sensor")
    defs = reloaded
    request, _ = tick(after_prompts)
    assert isinstance(request, dg.RunRequest)
    selected = {k.to_user_string() for k in request.asset_selection}
    assert {"real_images", "generator", "judge", "classifier_real", "eval_report"} <= selected
    assert request.tags["dagster/asset_partition_range_end"] == "00001"


def test_eager_automation_refreshes_what_is_below_an_update(tmp_path: Path) -> None:
    defs = build_definitions(parse_params(tiny_params(tmp_path)))
    graph = defs.resolve_asset_graph()
    for name in ("real_images", "prompts", "synthetic_shards"):
        assert graph.get(dg.AssetKey(name)).automation_condition is None
    assert graph.get(dg.AssetKey("eval_report")).automation_condition is not None
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing upstream exists yet
        instance.report_runless_asset_event(dg.AssetMaterialization("real_images"))
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                   cursor=first.cursor)
        requested = {key.to_user_string() for key in graph.get_all_asset_keys()
                     if second.get_num_requested(key)}
    # Everything whose only input is real_images follows it; nothing that also needs shards.
    assert {"generator", "judge", "classifier_real"} <= requested
    assert not requested & {"filtered_set", "eval_report", "synthetic_shards"}

    off = build_definitions(parse_params(tiny_params(tmp_path, automation={"eager": False})))
    assert off.resolve_asset_graph().get(dg.AssetKey("judge")).automation_condition is None
