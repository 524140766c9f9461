"""What eval_report gathers from the Dagster instance: the cost of a partitioned asset."""

import time
from pathlib import Path

import dagster as dg

from synthfactory.assets.report import asset_costs
from synthfactory.resources.store import ArtifactStore

CELLS = ["a", "b"]


def test_a_partitioned_asset_costs_every_partitions_latest_step(tmp_path: Path) -> None:
    """Guards the cost of the distillation table: its cells are runs of their own, so the latest
    materialization's step alone (one cell) under-reports it. Each partition's latest step
    counts once: `a` made twice counts its second run only."""
    costs: dict[str, float | None] = {}

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(CELLS))
    def cells(context: dg.AssetExecutionContext) -> None:
        time.sleep(0.2 if context.partition_key == "b" else 0.05)

    @dg.asset(deps=[cells])
    def report(context: dg.AssetExecutionContext) -> None:
        [row, _] = asset_costs(context, ["cells"], ArtifactStore(root=str(tmp_path)),
                               time.perf_counter())
        costs["cells"] = row.seconds

    with dg.DagsterInstance.ephemeral() as instance:
        runs = [dg.materialize([cells], instance=instance, partition_key=key)
                for key in ["a", "b", "a"]]
        dg.materialize([cells, report], instance=instance, selection=[report])

        def step_seconds(result: dg.ExecuteInProcessResult) -> float:
            [stats] = instance.get_run_step_stats(result.run_id)
            return float(stats.end_time - stats.start_time)

        expected = step_seconds(runs[1]) + step_seconds(runs[2])
    assert costs["cells"] is not None and abs(costs["cells"] - expected) < 1e-6
