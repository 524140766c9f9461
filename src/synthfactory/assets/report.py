"""The answer: `eval_report`, which measures every arm's classifiers on the real held-out images
and writes the report. It depends on the classifiers of the configured arms (and scaling), and on
every other asset (`definitions.build_definitions`): it prices each of them from the Dagster
instance (cost.json)."""

import json
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.evaluation.arms import ARMS, SCALING_ASSET, arm_order, replicated_assets
from synthfactory.ops.evaluation.cost import COST_JSON, AssetCost, cost_summary
from synthfactory.ops.report.cost import cost_section
from synthfactory.ops.evaluation.missing import missing_arm_lines
from synthfactory.ops.report.plots import accuracy_plot
from synthfactory.ops.report.tables import arm_table_markdown
from synthfactory.ops.seeds import replicate_ids
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import atomic_dir, dumps_json, sha256_file
from synthfactory.ops.training import HISTORY_JSON
from synthfactory.params import Params
from synthfactory.asset_inputs import cell_table
from synthfactory.publishing import png_md
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


def build_eval_report(config: Params, replicates: int = 1) -> dg.AssetsDefinition:
    """`eval_report`, depending on the classifiers of the configured arms (and scaling); it
    pools the arms of the `replicates` replicates that exist (assets/replicates.py)."""
    arms = arm_order(config.classifiers.arms)
    deps = [asset for arm in arms if (asset := ARMS[arm].classifier_asset) is not None]
    deps += [SCALING_ASSET] if config.eval_report.scaling else []  # both curves: real, filtered
    # The distillation table (every cell) is reported whether or not `distilled` is an arm.
    deps += sorted({"classifier_distilled", "filtered_set", "distilled_set", "generator",
                    "real_images", "judge"} - set(deps))
    deps += ["retrieved_set"] if "retrieved" in arms else []

    @dg.asset(name="eval_report", group_name="evaluation", kinds={"html", "json"},
              code_version="4", pool="gpu", op_tags=GPU_OP_TAGS, deps=deps)
    def eval_report(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                    runtime: TorchRuntime) -> dg.MaterializeResult:
        """The answer: accuracy of every arm on the real test split, mean ± sample std over
        seeds, grouped (references, synthetic, combined) with the difference to real; the
        validation accuracies that choices read; the scaling curve with its power-law fit and
        real-equivalent; the cost of every asset. Also what weakens the answer: the arms that
        were not built and why (`missing_arms`), the real images per class and split with
        imbalance and small-test-class warnings (`data`), and the near-copies of test images
        among the synthetic ones (`contamination`, counted even when zero).

        Writes `metrics.json` (deterministic), `report.md`, a self-contained `report.html`
        and `cost.json` (wall times: kept out of metrics.json and report.md) to
        `eval_report.output_dir`, with lineage: params digest, generator, shard and judge
        digests. The same files are published through the store (`eval_report/` under its
        root, uploaded with a commit on an object store).
        """
        from synthfactory.ops.report.document import write_report  # deferred: torch
        from synthfactory.ops.report.metrics_json import report_metrics  # deferred: torch

        started = time.perf_counter()
        replicated = replicated_assets(arms)
        replicas = {replicate: store.for_replicate(replicate, replicated).require
                    for replicate in replicate_ids(replicates)[1:]}
        metrics, pictures = report_metrics(store.require, store.path("shard_scores"),
                                           _settings(params, arms, runtime), runtime.torch_device,
                                           replicas)
        for line in missing_arm_lines(metrics["missing_arms"]):
            context.log.warning(f"eval_report: {line}")
        cost = cost_summary(asset_costs(context, _priced(context), store, started),
                            str(runtime.torch_device), gpus=1)
        # Published through the store first (uploaded with its commit when the root is an
        # object store, so other machines and people read the same report), then copied to
        # output_dir.
        with store.publish_dir("eval_report") as directory:
            write_report(directory, metrics, pictures, html_only=[cost_section(cost)])
            (directory / COST_JSON).write_text(dumps_json(cost))
        output = Path(params.eval_report.output_dir)
        with atomic_dir(output) as directory:
            shutil.copytree(store.path("eval_report"), directory, dirs_exist_ok=True)
        return _result(context, metrics, output, started)

    return eval_report


def _settings(params: Params, arms: list[str], runtime: TorchRuntime) -> Any:
    """What the params fix of the report, for `ops.report.metrics_json`."""
    from synthfactory.ops.report.metrics_json import ReportSettings  # deferred: torch

    return ReportSettings(
        arms=arms, cells=[cell.key for cell in cell_table(params)],
        classifiers=params.classifiers, few_shot=params.real_images.few_shot,
        judge_batch_size=params.judge.batch_size, refinement_rounds=params.refinement.rounds,
        scaling=params.eval_report.scaling, grid_per_class=params.eval_report.grid_per_class,
        contamination=params.contamination.model_dump(),
        params_digest=params.digest(*Params.model_fields), seed=runtime.seed,
        warnings=params.eval_report.warnings.model_dump())


def _priced(context: dg.AssetExecutionContext) -> list[str]:
    """The assets the report prices: every one it depends on (definitions.build_definitions
    makes that every other asset), in graph order rather than from a list kept by hand."""
    graph = context.job_def.asset_layer.asset_graph
    upstream = context.assets_def.dependency_keys
    return [key.to_user_string() for key in graph.toposorted_asset_keys if key in upstream]


def _result(context: dg.AssetExecutionContext, metrics: dict[str, Any], output: Path,
            started: float) -> dg.MaterializeResult:
    """The report's metadata: the arm table (also logged), the accuracy plot, each arm's
    accuracy, the missing arms; metrics.json's digest is the data version."""
    table = arm_table_markdown(metrics)
    context.log.info("eval_report:\n" + table)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(output / "report.html")),
            "arms": dg.MetadataValue.md(table),
            "accuracy_plot": png_md(accuracy_plot(metrics), "accuracy per arm", bold=False),
            **{f"accuracy_{arm}": dg.MetadataValue.float(round(row["accuracy_mean"], 4))
               for arm, row in metrics["arms"].items()},
            "missing_arms": dg.MetadataValue.json(metrics["missing_arms"]),
            "contamination_count": metrics["contamination"]["count"],
            "seconds": round(time.perf_counter() - started, 1),
        },
        data_version=dg.DataVersion(sha256_file(output / "metrics.json")[:16]),
    )


def asset_costs(context: dg.AssetExecutionContext, assets: list[str], store: ArtifactStore,
                started: float) -> list[AssetCost]:
    """Each asset's wall seconds (the steps that made its current materialization, every
    partition's, from the Dagster instance; None when the instance has no record) and images
    processed; eval_report's own seconds up to now, last."""
    rows = [AssetCost(name, _step_seconds(context, name), *_images(store, name))
            for name in assets]
    return [*rows, AssetCost("eval_report", time.perf_counter() - started)]


def _step_seconds(context: dg.AssetExecutionContext, asset: str) -> float | None:
    """The wall seconds of the steps that made what `asset` holds now: its latest
    materialization's step, or for a partitioned asset the distinct steps of each partition's
    latest materialization, summed (a cell of the distillation table is a run of its own).
    None when the instance lacks a record of one of them."""
    instance = context.instance
    key = dg.AssetKey.from_user_string(asset)  # a replicate's copy: r1/<asset>
    layer = context.job_def.asset_layer
    definition = layer.get(key).partitions_def if layer.has(key) else None
    if definition is None:
        latest = instance.get_latest_materialization_event(key)
        events = [] if latest is None else [latest]
        wanted = 1
    else:
        keys = set(definition.get_partition_keys())
        found: dict[str, Any] = {}
        cursor = None
        while len(found) < len(keys):  # newest first: the first record of a partition is its latest
            page = instance.fetch_materializations(key, limit=1000, cursor=cursor)
            for record in page.records:
                if record.partition_key in keys:
                    found.setdefault(record.partition_key, record.event_log_entry)
            if not page.has_more:
                break
            cursor = page.cursor
        events, wanted = list(found.values()), len(keys)
    if len(events) < wanted or any(not event.step_key for event in events):
        return None
    steps: dict[str, set[str]] = {}
    for event in events:
        steps.setdefault(event.run_id, set()).add(event.step_key)
    seconds = 0.0
    for run_id, step_keys in steps.items():
        stats = instance.get_run_step_stats(run_id, step_keys=sorted(step_keys))
        if len(stats) < len(step_keys) or any(s.start_time is None or s.end_time is None
                                              for s in stats):
            return None
        seconds += sum(float(s.end_time - s.start_time) for s in stats)
    return seconds


def _images(store: ArtifactStore, asset: str) -> tuple[int | None, str]:
    """(images processed, what they were) for the assets where images/s means something."""
    directory = store.path(asset)
    replicate, _, name = asset.rpartition("/")  # a replicate's copy: r1/<asset>, in r1/
    if name == "synthetic_shards":
        summary = store.path(replicate, "filtered_set", SUMMARY_JSON)
        if summary.is_file():
            return int(json.loads(summary.read_text())["total"]), "generated"
    if name.startswith("classifier_") and (directory / HISTORY_JSON).is_file():
        history = json.loads((directory / HISTORY_JSON).read_text())
        seeds = history.get("seeds") or [s for row in history.get("fractions", [])
                                         for s in row["seeds"]]
        seen = [seed.get("samples_seen") for seed in seeds]
        if seen and all(isinstance(n, int) for n in seen):
            return int(sum(seen)), "training samples"
    return None, ""
