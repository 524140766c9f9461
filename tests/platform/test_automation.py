"""The rebuild schedule and the params sensor (asset backfills across partitions definitions)
and declarative automation, through Dagster's helpers."""

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
                         "distilled_set",
                         "classifier_synthetic", "classifier_filtered", "classifier_distilled",
                         "classifier_mixed", "classifier_scaling", "eval_report"}


def _write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _tick(defs: dg.Definitions, name: str, cursor: str | None
          ) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    """One evaluation of a sensor of `defs` with `cursor`: its request (or skip) and new cursor."""
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          sensor_name=name)
        result = defs.resolve_sensor_def(name).evaluate_tick(context)
    requests = result.run_requests or []
    assert len(requests) <= 1
    return (requests[0] if requests else dg.SkipReason(result.skip_message)), result.cursor


def _requested(defs: dg.Definitions, request: dg.RunRequest) -> dict[str, list[str] | None]:
    """What a backfill request covers: each asset's partition keys (None: unpartitioned)."""
    subset = request.asset_graph_subset
    assert subset is not None and request.requires_backfill_daemon()
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): (sorted(subset.get_partitions_subset(key).get_partition_keys())
                                   if graph.get(key).partitions_def else None)
            for key in subset.asset_keys}


def test_schedule_is_off_by_default_and_backfills_every_partition_on_the_cron(
        tmp_path: Path) -> None:
    """Guards the rebuild across partitions definitions: one request covers every asset and
    every shard, cell and expert (a job or a schedule's run could hold one definition only)."""
    table = {"methods": ["dm", "mtt"], "ipcs": [1, 10], "sources": ["real"]}
    defs = build_definitions(parse_params(tiny_params(
        tmp_path, distilled_set=table, expert_trajectories={"experts": 2})))
    schedule = defs.resolve_sensor_def("rebuild_schedule")
    assert schedule.default_status == dg.DefaultSensorStatus.STOPPED
    assert "'0 3 * * *' (UTC)" in schedule.description
    first, cursor = _tick(defs, "rebuild_schedule", None)  # records the last cron time only
    assert isinstance(first, dg.SkipReason) and "it rebuilds at the next one" in \
        first.skip_message
    latest = dt.datetime.fromisoformat(cursor)
    assert (latest.hour, latest.minute) == (3, 0)
    assert dt.timedelta(0) <= dt.datetime.now(dt.timezone.utc) - latest <= dt.timedelta(days=1)
    same, _ = _tick(defs, "rebuild_schedule", cursor)
    assert isinstance(same, dg.SkipReason) and "no cron time" in same.skip_message

    # A cron time passed since the cursor: one backfill of everything, tagged with that time.
    request, after = _tick(defs, "rebuild_schedule", "2020-01-01T03:00:00+00:00")
    assert isinstance(request, dg.RunRequest) and after == cursor
    assert request.tags["synthfactory/rebuild"] == cursor
    covered = _requested(defs, request)
    graph = defs.resolve_asset_graph()
    assert set(covered) == {key.to_user_string() for key in graph.materializable_asset_keys}
    assert covered["synthetic_shards"] == ["00000", "00001", "00002"]
    cells = sorted(["dm-ipc1-real", "dm-ipc10-real", "mtt-ipc1-real", "mtt-ipc10-real"])
    assert covered["distilled_set"] == covered["classifier_distilled"] == cells
    assert covered["expert_trajectories"] == ["real-expert-0", "real-expert-1"]
    assert covered["eval_report"] is None

    enabled = build_definitions(parse_params(tiny_params(
        tmp_path, automation={"schedule": {"cron": "30 1 * * 1", "enabled": True}})))
    schedule = enabled.resolve_sensor_def("rebuild_schedule")
    assert "'30 1 * * 1'" in schedule.description
    assert schedule.default_status == dg.DefaultSensorStatus.RUNNING
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
        return _tick(defs, "params_change_sensor", cursor)

    first, cursor = tick(None)  # the first tick only records the state
    assert isinstance(first, dg.SkipReason) and cursor
    unchanged, same = tick(cursor)
    assert isinstance(unchanged, dg.SkipReason) and "unchanged" in unchanged.skip_message

    # A new template: a backfill of the prompts and everything below them, every partition.
    raw["prompts"]["templates"] = ["a photo of a {name}, outdoors"]
    _write(params_file, raw)
    request, after_prompts = tick(same)
    assert isinstance(request, dg.RunRequest) and after_prompts != same
    covered = _requested(defs, request)
    assert set(covered) == DOWNSTREAM_OF_PROMPTS
    assert covered["synthetic_shards"] == ["00000"]
    assert covered["distilled_set"] == covered["classifier_distilled"] == ["dm-ipc2-filtered"]
    assert request.tags["synthfactory/changed"] == "prompts"

    # A new class folder changes the class list: real_images and everything below it; the
    # shard count changes (3 classes × 10 / 25 → 2 shards, the location has 1): reload first.
    (folder / "owls").mkdir()
    skipped, kept_cursor = tick(after_prompts)
    assert isinstance(skipped, dg.SkipReason) and "reload the code location" in skipped.skip_message
    assert "synthetic_shards" in skipped.skip_message
    assert kept_cursor == after_prompts  # so the backfill starts after the reload
    defs = build_definitions(load_params(params_file), params_file)
    request, _ = tick(after_prompts)
    assert isinstance(request, dg.RunRequest)
    covered = _requested(defs, request)
    assert {"real_images", "generator", "judge", "classifier_real", "eval_report"} <= set(covered)
    assert covered["synthetic_shards"] == ["00000", "00001"]

    # Another cell in the file: other partitions of the distillation assets, reload first too.
    raw["distilled_set"] = {**raw["distilled_set"], "ipcs": [2, 3]}
    raw["prompts"]["templates"] = ["a photo of a {name}"]
    _write(params_file, raw)
    skipped, _ = tick(after_prompts)
    assert isinstance(skipped, dg.SkipReason) and "classifier_distilled, distilled_set" in \
        skipped.skip_message


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
