"""The Dagster code location: `dagster dev -m synthfactory.definitions` loads `defs`.

The params file is `params.yaml` in the working directory, or the file named by the environment
variable SYNTHFACTORY_PARAMS (the CLI sets it for `--params`). Loading is cheap: torch and
diffusers are imported by the steps that use them, not here.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from synthfactory.assets.adapter import ADAPTER_ASSET, generator_adapter
from synthfactory.assets.checks import ASSET_CHECKS
from synthfactory.assets.curation import build_shard_scores, filtered_set, judge, retrieved_set
from synthfactory.assets.data import prompts, real_images
from synthfactory.assets.distillation import classifier_distilled, distilled_set, expert_trajectories
from synthfactory.assets.dvc_versions import wrap_all
from synthfactory.assets.evaluation import evaluation_assets
from synthfactory.assets.generation import build_synthetic_shards, generator
from synthfactory.assets.refinement import refinement_assets, report_deps
from synthfactory.automation import (
    build_params_sensor,
    build_rebuild_schedule,
    rebuild_job,
    shard_keys,
    with_eager_automation,
)
from synthfactory.executors import build_executor
from synthfactory.params import ProjectConfig, load_params

PARAMS_ENV = "SYNTHFACTORY_PARAMS"


def shard_partitions(config: ProjectConfig) -> dg.StaticPartitionsDefinition:
    """One partition per shard of the configured prompts: classes × images per class / shard size."""
    return dg.StaticPartitionsDefinition(shard_keys(config))


def build_definitions(config: ProjectConfig, params_path: str | Path = "params.yaml"
                      ) -> dg.Definitions:
    """Assets, checks, jobs, schedule, sensor, executor and resources for one params file.

    Every asset's data version is DVC's md5 of its output. `params_path` is the file the sensor
    re-reads on every tick.
    """
    partitions = shard_partitions(config)
    shards = build_synthetic_shards(partitions)
    *classifiers, report = evaluation_assets(config.params, config.runtime.devices)
    adapters = []
    if config.params.generator.adapt == "lora":  # shards come from the adapted generator
        adapters = [generator_adapter]
        shards = _with_deps(shards, [ADAPTER_ASSET])
    if config.params.refinement.rounds:  # the report reads every round's classifiers
        report = _with_deps(report, report_deps(config))
    retrieval = [retrieved_set] if "retrieved" in config.params.classifiers.arms else []
    assets = [real_images, prompts, generator, *adapters, shards, judge,
              build_shard_scores(partitions), filtered_set, expert_trajectories, distilled_set,
              classifier_distilled, *retrieval, *classifiers,
              *refinement_assets(config, partitions), report]
    if config.automation.eager:
        assets = with_eager_automation(assets)
    job = rebuild_job()
    return dg.Definitions(
        assets=wrap_all(assets),
        asset_checks=ASSET_CHECKS,
        jobs=[job],
        schedules=[build_rebuild_schedule(config, job)],
        sensors=[build_params_sensor(config, params_path)],
        executor=build_executor(config.executor),
        resources={"params": config.params, "store": config.store, "runtime": config.runtime,
                   "dvc": config.dvc},
    )


def _with_deps(assets_def: dg.AssetsDefinition, deps: list[str]) -> dg.AssetsDefinition:
    """The same asset with more upstream assets (optional parts of the graph add themselves)."""
    (mapped,) = dg.map_asset_specs(lambda spec: spec.merge_attributes(deps=deps), [assets_def])
    return mapped


def job_for_params(params_path: str, job_name: str = "rebuild") -> dg.JobDefinition:
    """A job of the definitions for `params_path`: what a multiprocess run rebuilds in each step
    process (`dg.build_reconstructable_job("synthfactory.definitions", "job_for_params", ...)`)."""
    return build_definitions(load_params(params_path), params_path).resolve_job_def(job_name)


PARAMS_PATH = os.environ.get(PARAMS_ENV, "params.yaml")
defs = build_definitions(load_params(PARAMS_PATH), PARAMS_PATH)
