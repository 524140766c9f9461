"""The Dagster code location: `dagster dev -m synthfactory.definitions` loads `defs`.

The params file is `params.yaml` in the working directory, or the file named by the environment
variable SYNTHFACTORY_PARAMS (the CLI sets it for `--params`). Loading is cheap: torch and
diffusers are imported by the steps that use them, not here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dagster as dg

from synthfactory.assets.adapter import ADAPTER_ASSET, generator_adapter
from synthfactory.assets.checks import ASSET_CHECKS
from synthfactory.assets.curation import build_shard_scores, filtered_set, judge, retrieved_set
from synthfactory.assets.data import prompts, real_images
from synthfactory.assets.classifier_distilled import classifier_distilled_asset
from synthfactory.assets.distillation import distilled_set_asset
from synthfactory.assets.dvc_versions import wrap_all
from synthfactory.assets.evaluation import evaluation_assets
from synthfactory.assets.experts import expert_trajectories_asset
from synthfactory.assets.generation import build_synthetic_shards, generator
from synthfactory.assets.refinement import refinement_assets
from synthfactory.assets.replicates import replicate_copies
from synthfactory.assets.report import build_eval_report
from synthfactory.automation import (
    build_params_sensor,
    build_rebuild_schedule,
    shard_keys,
    with_eager_automation,
)
from synthfactory.executors import build_executor
from synthfactory.ops.distillation.cells import TRAJECTORY_METHODS, expert_keys, parse_expert
from synthfactory.ops.evaluation.arms import replicated_assets
from synthfactory.params import ProjectConfig, load_params
from synthfactory.asset_inputs import cell_table as table

PARAMS_ENV = "SYNTHFACTORY_PARAMS"
RUN_JOB = "synthfactory_run"


def shard_partitions(config: ProjectConfig) -> dg.StaticPartitionsDefinition:
    """One partition per shard of the configured prompts: classes × images per class / shard size."""
    return dg.StaticPartitionsDefinition(shard_keys(config))


def build_definitions(config: ProjectConfig, params_path: str | Path = "params.yaml"
                      ) -> dg.Definitions:
    """Assets, checks, the rebuild and params sensors, executor and resources for one params file.

    With `replicates` > 1, the assets of each further replicate are copies keyed
    `<replicate>/<asset>` (assets/replicates.py). Three partitions definitions: shards
    (`synthetic_shards`, `shard_scores`, the refinement rounds' `refined_shards`), the cells of
    the distillation table (`distilled_set`, `classifier_distilled`) and, with an mtt/datm
    cell, experts (`expert_trajectories`). No job spans them (one run holds one definition):
    `synthfactory run` plans runs (`synthfactory.planning`), the sensors request backfills.
    Every asset's data version is DVC's md5 of its output (per partition for partitioned ones).
    `params_path` is the file the params sensor re-reads on every tick.
    """
    partitions = shard_partitions(config)
    shards = build_synthetic_shards(partitions)
    classifiers = evaluation_assets(config.params, config.runtime.devices)
    report = build_eval_report(config.params, config.replicates)
    adapters = []
    if config.params.generator.adapt == "lora":  # shards come from the adapted generator
        adapters = [generator_adapter]
        shards = _with_deps(shards, [ADAPTER_ASSET])
    retrieval = [retrieved_set] if "retrieved" in config.params.classifiers.arms else []
    upstream = [real_images, prompts, generator, *adapters, shards, judge,
                build_shard_scores(partitions), filtered_set, *distillation_assets(config),
                *retrieval, *classifiers, *refinement_assets(config, partitions)]
    # `replicates: R`: r1 … r(R-1) re-draw everything random downstream of the generator's
    # weights (assets/replicates.py); the graph's own assets are r0.
    upstream += replicate_copies(upstream, config.replicates,
                                 replicated_assets(config.params.classifiers.arms))
    # The report is the sink: it prices every asset (cost.json) and reads the shards and their
    # scores for the leakage check, so it depends on every other asset (DVC included).
    report = _with_deps(report, [key for definition in upstream for key in definition.keys])
    assets = [*upstream, report]
    if config.automation.eager:
        assets = with_eager_automation(assets)
    return dg.Definitions(
        assets=wrap_all(assets),
        asset_checks=ASSET_CHECKS,
        sensors=[build_rebuild_schedule(config),
                 build_params_sensor(config, params_path, build_definitions)],
        executor=build_executor(config.executor),
        resources={"params": config.params, "store": config.store, "runtime": config.runtime,
                   "dvc": config.dvc},
    )


def distillation_assets(config: ProjectConfig) -> list[dg.AssetsDefinition]:
    """`expert_trajectories` (only when a cell matches trajectories: mtt, datm), `distilled_set`
    and `classifier_distilled`, partitioned by the experts and cells that the params imply (see
    `synthfactory.assets.distillation`).

    A trajectory cell depends on the experts of its source only (a `StaticPartitionMapping`), so
    a backfill starts `dm-ipc10-real` at once and `mtt-ipc10-real` when `real-expert-*` exist.
    """
    params = config.params
    cell_table = table(params)
    experts = expert_keys(cell_table, params.expert_trajectories.experts)
    cells = dg.StaticPartitionsDefinition([cell.key for cell in cell_table])
    deps: list[str | dg.AssetDep] = ["filtered_set", "judge", "real_images"]
    assets = []
    with warnings.catch_warnings():  # BackfillPolicy is beta (see assets/generation.py)
        warnings.simplefilter("ignore", dg.BetaWarning)
        if experts:
            assets.append(expert_trajectories_asset(dg.StaticPartitionsDefinition(experts)))
            mapping = dg.StaticPartitionMapping({
                key: {cell.key for cell in cell_table if cell.method in TRAJECTORY_METHODS
                      and cell.source == parse_expert(key)[0]} for key in experts})
            deps.append(dg.AssetDep("expert_trajectories", partition_mapping=mapping))
        assets += [distilled_set_asset(cells, deps), classifier_distilled_asset(cells)]
    return assets


def _with_deps(assets_def: dg.AssetsDefinition, deps: list[str] | list[dg.AssetKey]
               ) -> dg.AssetsDefinition:
    """The same asset with more upstream assets (optional parts of the graph add themselves);
    those it already depends on are left as they are."""
    keys = [dg.AssetKey.from_user_string(dep) if isinstance(dep, str) else dep for dep in deps]

    def merge(spec: dg.AssetSpec) -> dg.AssetSpec:
        declared = {dep.asset_key for dep in spec.deps}
        return spec.merge_attributes(deps=[key for key in keys if key not in declared])

    (mapped,) = dg.map_asset_specs(merge, [assets_def])
    return mapped


def job_for_params(params_path: str, *assets: str) -> dg.JobDefinition:
    """A job of `assets` (of one partitions definition at most: one run of
    `synthfactory.planning.plan_runs`, checks included) in the definitions for `params_path`:
    what a multiprocess run rebuilds in each step process (`dg.build_reconstructable_job(
    "synthfactory.definitions", "job_for_params", reconstructable_args=(path, *assets))`)."""
    return _run_job(params_path, assets, checks=True)


def job_for_params_without_checks(params_path: str, *assets: str) -> dg.JobDefinition:
    """`job_for_params` without the assets' checks: only for `synthfactory run --no-checks`
    (the user's explicit opt-out, said in the run's summary) with several processes."""
    return _run_job(params_path, assets, checks=False)


def _run_job(params_path: str, assets: tuple[str, ...], checks: bool) -> dg.JobDefinition:
    defs = build_definitions(load_params(params_path), params_path)
    # Names as `to_user_string` spells them: a replicate's copy is `r1/prompts` (two parts).
    selection = dg.AssetSelection.assets(*(dg.AssetKey.from_user_string(a) for a in assets))
    job = dg.define_asset_job(RUN_JOB, selection=selection if checks
                              else selection.without_checks())
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job],
                          resources=defs.resources, executor=defs.executor
                          ).resolve_job_def(RUN_JOB)


PARAMS_PATH = os.environ.get(PARAMS_ENV, "params.yaml")
defs = build_definitions(load_params(PARAMS_PATH), PARAMS_PATH)
