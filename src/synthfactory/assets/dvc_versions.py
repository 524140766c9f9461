"""Dagster knows DVC's versions: each asset's output digest is its data version.

`with_dvc_version` wraps an asset without changing it: after the asset's own function returns,
the wrapper computes DVC's md5 of the asset's output directory (the value `dvc.lock` records for
the stage of the same name), adds it to the materialization metadata (`dvc_md5`, `dvc_path`)
and makes it the data version, so the UI shows which data a report came from. With the `dvc`
resource's `commit` option it then runs `dvc commit <asset>` (and `dvc push <asset>` with
`push`, which implies the commit), except inside `dvc repro`, which records the outputs itself.

A partitioned asset's data version is per partition: the digest of the files named after the
partition key (a shard's tar and sidecar) when one partition ran; `dvc_md5` is always the whole
directory's.
"""


import inspect
from typing import Any

import dagster as dg

from synthfactory.dvc_stages import output_path
from synthfactory.ops.storage.dvc_hash import dvc_md5, tree_md5
from synthfactory.resources.dvc import DvcResource

DVC_RESOURCE = "dvc"


def with_dvc_version(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same asset (key, deps, group, kinds, code version, partitions, pool) plus DVC versions."""
    function = assets_def.op.compute_fn.decorated_fn
    resource_args = list(inspect.signature(function).parameters)[1:]
    (spec,) = assets_def.specs
    name = spec.key.to_user_string()
    partitioned = assets_def.partitions_def is not None

    def versioned(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resources = {arg: getattr(context.resources, arg) for arg in resource_args}
        result = function(context, **resources)
        if not isinstance(result, dg.MaterializeResult):
            raise TypeError(f"asset {name!r} returned {type(result).__name__}; DVC versioning "
                            "needs a MaterializeResult")
        path = output_path(name, context.resources.store, context.resources.params)
        digest = dvc_md5(path)
        metadata: dict[str, Any] = {**(result.metadata or {}), "dvc_md5": digest,
                                    "dvc_path": dg.MetadataValue.path(str(path))}
        version = dg.DataVersion(digest)
        # Only a partitioned asset has partition keys: an unpartitioned one (the judge) can run
        # in a run whose tags name a shard range for the partitioned one.
        if partitioned and (context.has_partition_key_range or context.has_partition_key):
            version = _partition_version(context, path) or result.data_version
        dvc: DvcResource = getattr(context.resources, DVC_RESOURCE)
        if dvc.commit or dvc.push:  # a push uploads what dvc.lock records: it needs the commit
            if dvc.inside_stage():
                context.log.info(f"{name}: inside `dvc repro`, which records the output itself")
            else:
                dvc.commit_stage(name)
                metadata["dvc_committed"] = True
                if dvc.push:
                    dvc.push_stage(name)
                    metadata["dvc_pushed"] = True
        return dg.MaterializeResult(metadata=metadata, data_version=version,
                                    check_results=result.check_results)

    versioned.__wrapped_asset__ = function  # dvc-sync analyses the asset's own function
    return dg.multi_asset(
        name=assets_def.op.name, specs=[spec], partitions_def=assets_def.partitions_def,
        backfill_policy=assets_def.backfill_policy, pool=assets_def.op.pool,
        op_tags=assets_def.op.tags,
        required_resource_keys=(set(assets_def.required_resource_keys) - {"io_manager"})
        | {DVC_RESOURCE, "store", "params"},
    )(versioned)


def _partition_version(context: dg.AssetExecutionContext, path: Any) -> dg.DataVersion | None:
    """The digest of one partition's files (named after its key); None for a range of several."""
    keys = context.partition_keys
    if len(keys) != 1:
        return None
    files = [p for p in path.rglob("*") if p.is_file() and keys[0] in p.name]
    return dg.DataVersion(tree_md5(path, files)) if files else None


def wrap_all(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every asset with its DVC version."""
    return [with_dvc_version(assets_def) for assets_def in assets]

