"""The Dagster code location: `dagster dev -m synthfactory.definitions` loads `defs`.

The params file is `params.yaml` in the working directory, or the file named by the environment
variable SYNTHFACTORY_PARAMS (the CLI sets it for `--params`). Loading is cheap: torch and
diffusers are imported by the steps that use them, not here.
"""

from __future__ import annotations

import os

import dagster as dg

from synthfactory.assets.curation import distilled_set, filtered_set, judge
from synthfactory.assets.data import prompts, real_images
from synthfactory.assets.dvc_versions import wrap_all
from synthfactory.assets.evaluation import ARMS, build_classifier, eval_report
from synthfactory.assets.generation import build_synthetic_shards, generator
from synthfactory.ops.prompts import shard_count, shard_key
from synthfactory.ops.real_data import list_classes
from synthfactory.params import ProjectConfig, load_params

PARAMS_ENV = "SYNTHFACTORY_PARAMS"


def shard_partitions(config: ProjectConfig) -> dg.StaticPartitionsDefinition:
    """One partition per shard of the configured prompts: classes × images per class / shard size."""
    params = config.params
    n_classes = len(list_classes(params.real_images.source, params.real_images.root))
    n_records = n_classes * params.prompts.images_per_class
    count = shard_count(n_records, params.synthetic_shards.shard_size)
    return dg.StaticPartitionsDefinition([shard_key(index) for index in range(count)])


def build_definitions(config: ProjectConfig) -> dg.Definitions:
    """Assets, jobs and resources for one params file; every asset's data version is DVC's md5."""
    assets = [real_images, prompts, generator, build_synthetic_shards(shard_partitions(config)),
              judge, filtered_set, distilled_set, *[build_classifier(arm) for arm in ARMS],
              eval_report]
    return dg.Definitions(
        assets=wrap_all(assets),
        resources={"params": config.params, "store": config.store, "runtime": config.runtime,
                   "dvc": config.dvc},
    )


defs = build_definitions(load_params(os.environ.get(PARAMS_ENV, "params.yaml")))
