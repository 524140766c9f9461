"""Dagster knows DVC's versions: each asset's output digest is its data version.

`with_dvc_version` wraps an asset without changing it: after the asset's own function returns,
the wrapper computes DVC's md5 of the asset's output directory (the value `dvc.lock` records for
the stage of the same name), adds it to the materialization metadata (`dvc_md5`, `dvc_path`)
and makes it the data version, so the UI shows which data a report came from. With the `dvc`
resource's `commit` option it then runs `dvc commit <asset>` (and `dvc push <asset>` with
`push`, which implies the commit), except inside `dvc repro`, which records the outputs itself.

A partitioned asset's data version is per partition: the digest of that partition's files (a
shard's `shard-<key>.tar` and sidecar, a distilled cell's `cells/<key>/` directory, an expert's
`<key>.safetensors`) when one partition ran — as in every run of a backfill of cells or experts
(one partition per run). A run over several partitions records Dagster's own version for all of
them (an output has one data version), and each partition's digest as its `partition_md5`
metadata. `dvc_md5` is always the whole directory's, as `dvc.lock` records it.
"""


import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from synthfactory.dvc_stages import output_path, stage_name
from synthfactory.ops.storage.atomic import TEMP_PREFIX
from synthfactory.ops.storage.dvc_hash import dvc_md5, tree_md5
from synthfactory.resources.dvc import DvcResource

DVC_RESOURCE = "dvc"
T = TypeVar("T")


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
        digest = _settled(lambda: dvc_md5(path), path) if partitioned else dvc_md5(path)
        metadata: dict[str, Any] = {**(result.metadata or {}), "dvc_md5": digest,
                                    "dvc_path": dg.MetadataValue.path(str(path))}
        version = dg.DataVersion(digest)
        # Only a partitioned asset has partition keys: an unpartitioned one (the judge) can run
        # in a run whose tags name a shard range for the partitioned one.
        if partitioned and (context.has_partition_key_range or context.has_partition_key):
            digests = _settled(lambda: partition_digests(path, context.partition_keys), path)
            for key, partition_digest in digests.items():
                if partition_digest is not None:
                    context.add_asset_metadata({"partition_md5": partition_digest},
                                               partition_key=key)
            only = list(digests.values())[0] if len(digests) == 1 else None
            version = dg.DataVersion(only) if only else result.data_version
        dvc: DvcResource = getattr(context.resources, DVC_RESOURCE)
        if dvc.commit or dvc.push:  # a push uploads what dvc.lock records: it needs the commit
            if dvc.inside_stage():
                context.log.info(f"{name}: inside `dvc repro`, which records the output itself")
            else:
                dvc.commit_stage(stage_name(name))
                metadata["dvc_committed"] = True
                if dvc.push:
                    dvc.push_stage(stage_name(name))
                    metadata["dvc_pushed"] = True
        return dg.MaterializeResult(metadata=metadata, data_version=version,
                                    check_results=result.check_results)

    # dvc-sync analyses the asset's own function (a replicate copy's wraps one too).
    versioned.__wrapped_asset__ = getattr(function, "__wrapped_asset__", function)
    return dg.multi_asset(
        name=assets_def.op.name, specs=[spec], partitions_def=assets_def.partitions_def,
        backfill_policy=assets_def.backfill_policy, pool=assets_def.op.pool,
        op_tags=assets_def.op.tags,
        required_resource_keys=(set(assets_def.required_resource_keys) - {"io_manager"})
        | {DVC_RESOURCE, "store", "params"},
    )(versioned)


def partition_digests(path: Path, keys: list[str]) -> dict[str, str | None]:
    """DVC's digest of each partition's files under an asset's directory (None when a partition
    has none). A partition's files lie under a directory named after its key or carry the key in
    their name, bounded by non-alphanumerics (so `dm-ipc1-real` does not take `dm-ipc10-real`'s
    files, nor `real-expert-1` those of `real-expert-10`); temporaries of writers are nobody's.
    """
    files = [p for p in path.rglob("*") if p.is_file()
             and not any(part.startswith(TEMP_PREFIX) for part in p.relative_to(path).parts)]
    digests: dict[str, str | None] = {}
    for key in keys:
        named = re.compile(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])")
        mine = [p for p in files
                if key in p.relative_to(path).parts[:-1] or named.search(p.name)]
        digests[key] = tree_md5(path, mine) if mine else None
    return digests


def _settled(compute: Callable[[], T], path: Path, attempts: int = 3) -> T:
    """`compute()` over a directory into which runs of other partitions may be publishing (a
    cell renamed into place between listing and reading): computed again when a file vanished."""
    for attempt in range(attempts):
        try:
            return compute()
        except FileNotFoundError:
            if attempt == attempts - 1 or not path.exists():
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def wrap_all(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """Every asset with its DVC version."""
    return [with_dvc_version(assets_def) for assets_def in assets]

