"""The run planner: which assets share a run (one partitions definition per run), in which order,
with which partitions. No asset runs here: plans of real definitions, checked for the rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params
from synthfactory.planning import PlannedRun, plan_runs
from tests.support import tiny_params

TABLE = {"methods": ["dm", "mtt"], "ipcs": [1, 2], "sources": ["real", "filtered"]}
CELLS = ["dm-ipc1-real", "dm-ipc2-real", "mtt-ipc1-real", "mtt-ipc2-real", "dm-ipc1-filtered",
         "dm-ipc2-filtered", "mtt-ipc1-filtered", "mtt-ipc2-filtered"]


def _defs(tmp_path: Path, **overrides: Any) -> dg.Definitions:
    return build_definitions(parse_params(tiny_params(tmp_path, **overrides)))


def _described(plan: list[PlannedRun]) -> list[str]:
    return [run.describe() for run in plan]


def assert_valid(graph: Any, plan: list[PlannedRun], selected: set[dg.AssetKey]) -> None:
    """The rules every plan keeps: one partitions definition per run; every selected asset
    partition exactly once; each after the upstream partitions it reads (same run or earlier)."""
    where: dict[tuple[dg.AssetKey, str | None], int] = {}
    for index, run in enumerate(plan):
        definitions = {graph.get(key).partitions_def for key in run.assets} - {None}
        assert len(definitions) <= 1, run.describe()
        for key in run.assets:
            partitioned = graph.get(key).partitions_def is not None
            for partition in run.partition_keys if partitioned else [None]:
                assert (key, partition) not in where, (key, partition)
                where[key, partition] = index
    for key in selected:
        definition = graph.get(key).partitions_def
        made = {partition for asset, partition in where if asset == key}
        assert made == (set(definition.get_partition_keys()) if definition else {None}), key
    for (key, partition), index in where.items():
        node = graph.get(key)
        for parent in node.parent_keys & selected:
            same = (node.partitions_def is not None
                    and graph.get(parent).partitions_def == node.partitions_def)
            needed = [(p, k) for p, k in where if p == parent and (not same or k == partition)]
            assert needed and all(where[need] <= index for need in needed), (key, partition)


def test_one_run_cannot_hold_the_graph_and_the_plan_keeps_the_rules(tmp_path: Path) -> None:
    """Guards why the planner exists and what it keeps: Dagster refuses one run over the whole
    graph; the plan gives one run for the shards (refinement, the retrieval baseline and the
    scaling curve included: unpartitioned assets join their latest upstream's run), one per
    expert, one per cell (distil, then its networks), then the report."""
    defs = _defs(tmp_path, distilled_set=TABLE, expert_trajectories={"experts": 2},
                 refinement={"rounds": 1})
    with pytest.raises(dg.DagsterInvalidDefinitionError):
        dg.materialize(list(defs.assets), resources=defs.resources)
    graph = defs.resolve_asset_graph()
    everything = set(graph.get_all_asset_keys())
    plan = plan_runs(graph, everything)
    assert_valid(graph, plan, everything)
    shards_run = plan[0]
    assert {key.to_user_string() for key in shards_run.assets} == {
        "real_images", "prompts", "generator", "synthetic_shards", "judge", "shard_scores",
        "filtered_set", "retrieved_set", "classifier_real", "classifier_retrieved",
        "classifier_synthetic", "classifier_filtered", "classifier_mixed", "classifier_scaling",
        "refinement_plan", "refined_shards", "classifier_refined", "classifier_targeted_base",
        "classifier_uniform_plan", "classifier_uniform"}
    assert shards_run.tags == {"dagster/asset_partition_range_start": "00000",
                               "dagster/asset_partition_range_end": "00002"}
    assert _described(plan[1:]) == [
        *(f"expert_trajectories [{key}]" for key in ("real-expert-0", "real-expert-1",
                                                      "filtered-expert-0", "filtered-expert-1")),
        *(f"distilled_set, classifier_distilled [{cell}]" for cell in CELLS), "eval_report"]
    assert plan[1].tags == {"dagster/partition": "real-expert-0"}
    assert plan[-1].tags == {}


def test_the_default_graph_is_three_runs_and_shard_scores_joins_the_shards(
        tmp_path: Path) -> None:
    """`make run` on one cell: the shards' run, the cell's, the report's. `shard_scores`,
    partitioned like the shards (and below the unpartitioned judge), runs with them, not in a
    run of its own; `filtered_set`, below it, too."""
    defs = _defs(tmp_path)
    graph = defs.resolve_asset_graph()
    shard_scores = graph.get(dg.AssetKey("shard_scores"))
    assert shard_scores.partitions_def == graph.get(dg.AssetKey("synthetic_shards")).partitions_def
    everything = set(graph.get_all_asset_keys())
    plan = plan_runs(graph, everything)
    assert_valid(graph, plan, everything)
    assert len(plan) == 3
    assert {dg.AssetKey(name) for name in ("judge", "shard_scores", "filtered_set")} <= set(
        plan[0].assets)
    assert plan[0].partition_keys == ("00000", "00001", "00002")
    assert _described(plan[1:]) == ["distilled_set, classifier_distilled [dm-ipc2-filtered]",
                                    "eval_report"]
    # One shard of the scores alone: one run, that shard only.
    assert _described(plan_runs(graph, {dg.AssetKey("shard_scores")}, "00001")) == [
        "shard_scores [00001]"]


def test_partitions_pick_keys_of_their_own_definition(tmp_path: Path) -> None:
    """`--partitions` takes a key or a range of whichever definition it belongs to; the other
    definitions run all their keys; a key of no selected asset names what there is."""
    defs = _defs(tmp_path, distilled_set=TABLE, expert_trajectories={"experts": 2})
    graph = defs.resolve_asset_graph()
    below = dg.AssetSelection.assets("distilled_set").downstream().resolve(graph)
    assert _described(plan_runs(graph, below, "mtt-ipc2-real...dm-ipc1-filtered")) == [
        "distilled_set, classifier_distilled [mtt-ipc2-real]",
        "distilled_set, classifier_distilled [dm-ipc1-filtered]", "eval_report"]
    everything = graph.get_all_asset_keys()
    plan = plan_runs(graph, everything, "00001...00002")
    assert plan[0].partition_keys == ("00001", "00002")
    assert [run.partition_keys for run in plan[1:3]] == [("real-expert-0",), ("real-expert-1",)]
    assert len(plan) == 1 + 4 + len(CELLS) + 1  # the experts and cells all run
    with pytest.raises(ValueError, match=r"'dm-ipc1-real' is not a partition after "
                                         r"'dm-ipc2-real'; distilled_set, classifier_distilled:"):
        plan_runs(graph, below, "dm-ipc2-real...dm-ipc1-real")
    with pytest.raises(ValueError) as error:
        plan_runs(graph, everything, "dm-ipc3-real")
    assert "'dm-ipc3-real' is not a partition of the selected assets" in str(error.value)
    for listed in ("synthetic_shards, shard_scores: 00000...00002 (00000, 00001, 00002)",
                   "expert_trajectories: real-expert-0...filtered-expert-1",
                   "distilled_set, classifier_distilled: dm-ipc1-real...mtt-ipc2-filtered "
                   "(8 keys)"):
        assert listed in str(error.value)
    with pytest.raises(ValueError, match="the selection has no partitioned asset"):
        plan_runs(graph, {dg.AssetKey("judge")}, "00001")
