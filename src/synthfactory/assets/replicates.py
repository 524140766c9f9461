"""Replicates as assets: `replicates: R` adds, for r1 … r(R-1), a copy `<replicate>/<asset>`
of every asset that holds a draw of the randomness downstream of the generator's weights
(`ops.evaluation.arms.replicated_assets`: prompts, synthetic_shards, shard_scores,
filtered_set and the classifiers of the arms trained on them). The graph's own assets are
replicate r0.

A copy runs the asset's own function, so there is one way to make each thing; it differs in
what the function is given: a store view (`ArtifactStore.for_replicate`) that reads and writes
the replicated assets under `<store root>/<replicate>/` and reads the shared ones (real images,
generator, judge) where they are, and a runtime whose seed is the replicate's
(`ops.seeds.replicate_seed`): new sampling seeds, shards, scores, filter draws and classifier
seeds. A replicate is its own set of assets (partitions included: `r1/synthetic_shards` has
the shards' partitions), so it is re-made alone (`synthfactory run --select 'key:r1/*'`),
runs on its own GPU slot, and resumes after a crash like any asset; `eval_report` depends on
every copy and aggregates the replicates whose classifiers exist.

The copies carry no asset checks: the blocking checks guard the graph's own (r0) assets.
"""


import inspect
from typing import Any

import dagster as dg

from synthfactory.ops.seeds import replicate_ids, replicate_seed


def replicate_key(replicate: str, asset: str) -> dg.AssetKey:
    """The key of `asset` in `replicate`: the asset's own for r0, `<replicate>/<asset>` else."""
    return dg.AssetKey(asset) if replicate == "r0" else dg.AssetKey([replicate, asset])


def replicate_copies(assets: list[dg.AssetsDefinition], replicates: int,
                     replicated: list[str]) -> list[dg.AssetsDefinition]:
    """For each replicate r1 … r(R-1), a copy of every asset in `assets` named in
    `replicated` (see the module docstring); none when `replicates` is 1."""
    wanted = [definition for definition in assets
              if definition.key.to_user_string() in replicated]
    return [_copy(definition, replicate, replicated)
            for replicate in replicate_ids(replicates)[1:] for definition in wanted]


def _copy(assets_def: dg.AssetsDefinition, replicate: str,
          replicated: list[str]) -> dg.AssetsDefinition:
    """`assets_def` as replicate `replicate` makes it: key and replicated deps prefixed, the
    function given the replicate's store view and seed."""
    function = assets_def.op.compute_fn.decorated_fn
    (spec,) = assets_def.specs
    name = spec.key.to_user_string()
    deps = [dg.AssetDep(replicate_key(replicate, dep.asset_key.to_user_string())
                        if dep.asset_key.to_user_string() in replicated else dep.asset_key,
                        partition_mapping=dep.partition_mapping) for dep in spec.deps]
    copied = spec.replace_attributes(key=replicate_key(replicate, name), deps=deps,
                                     description=f"Replicate {replicate} of `{name}` (an "
                                                 "independent draw of its randomness). "
                                                 f"{spec.description or ''}")

    resource_args = list(inspect.signature(function).parameters)[1:]

    def replicate_asset(context: dg.AssetExecutionContext) -> Any:
        resources = {arg: getattr(context.resources, arg) for arg in resource_args}
        resources["store"] = resources["store"].for_replicate(replicate, replicated)
        runtime = resources["runtime"]
        resources["runtime"] = runtime.model_copy(
            update={"seed": replicate_seed(runtime.seed, replicate)})
        return function(context, **resources)

    # dvc-sync reads the code and params of the asset's own function through this.
    replicate_asset.__wrapped_asset__ = function  # type: ignore[attr-defined]
    return dg.multi_asset(
        name=f"{replicate}__{assets_def.op.name}", specs=[copied],
        partitions_def=assets_def.partitions_def, backfill_policy=assets_def.backfill_policy,
        pool=assets_def.op.pool, op_tags=assets_def.op.tags,
        required_resource_keys=(set(assets_def.required_resource_keys) - {"io_manager"})
        | {"store", "runtime"},
    )(replicate_asset)
