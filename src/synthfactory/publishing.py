"""What the asset modules share for publishing, in one place that each of them imports (no asset
module imports another): results as Dagster metadata (image grids as inline PNG, per-class count
tables, an asset recorded as not built, each partition's own metadata), partitions the params
no longer have, and the runtime things every step opens (the generator as params configure it,
where classifiers train). What an asset reads of the later stages (the sets a cell learns from,
the cells of a run, the classifiers' budgets) is in `synthfactory.asset_inputs`: kept apart so
that an early asset's code dependencies (dvc.yaml) do not include the later stages'. The
computations are in `synthfactory.ops`.

Small on purpose: a grid shows at most `per_class` images of each class.
"""

from __future__ import annotations

import base64
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from synthfactory.ops.evaluation.grids import image_grid
from synthfactory.ops.report.plots import png_bytes
from synthfactory.ops.storage.atomic import TEMP_PREFIX
from synthfactory.ops.storage.not_built import write_not_built
from synthfactory.ops.storage.shards import load_arrays, read_samples
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

if TYPE_CHECKING:  # torch is imported by the steps, not when the code location loads
    from synthfactory.ops.training.classifiers import Placement

GRID_PER_CLASS = 8
# One partition per run: see the docstring of synthfactory.assets.distillation.
ONE_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def path_md(store: ArtifactStore, *parts: str) -> dg.MetadataValue:
    """The metadata value of a path in the store."""
    return dg.MetadataValue.path(str(store.path(*parts)))


def image_grid_md(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                  title: str, per_class: int = GRID_PER_CLASS) -> dg.MetadataValue:
    """A markdown image (inline base64 PNG): one row per class, `per_class` images each."""
    grid = image_grid(images, labels, list(class_names), per_class=per_class)
    return png_md(png_bytes(grid), title)


def png_md(png: bytes, title: str, bold: bool = True) -> dg.MetadataValue:
    """A markdown image of PNG bytes (inline base64), under its title in bold unless not."""
    data = base64.b64encode(png).decode()
    return dg.MetadataValue.md((f"**{title}**\n\n" if bold else "")
                               + f"![{title}](data:image/png;base64,{data})")


def class_counts_md(labels: Sequence[int], class_names: Sequence[str],
                    header: str = "images") -> dg.MetadataValue:
    """A markdown table of how many samples each class has."""
    counts = Counter(int(label) for label in labels)
    rows = [f"| class | {header} |", "|---|---:|"]
    rows += [f"| {name} | {counts.get(index, 0)} |" for index, name in enumerate(class_names)]
    return dg.MetadataValue.md("\n".join(rows))


def shard_preview(tar_paths: Sequence[Path], class_names: Sequence[str]
                  ) -> dict[str, dg.MetadataValue]:
    """Per-class counts over the given shards and a grid of the first shard's images."""
    labels = [sample.label for sample in read_samples(tar_paths, decode=False)]
    images, first_labels, _ = load_arrays(tar_paths[:1])
    return {"per_class": class_counts_md(labels, class_names),
            "sample_grid": image_grid_md(images, first_labels, class_names,
                                         f"{tar_paths[0].name}, first {GRID_PER_CLASS} per class")}


def not_built_result(context: dg.AssetExecutionContext, store: ArtifactStore, asset: str,
                     reason: str, upstream: str | None = None) -> dg.MaterializeResult:
    """Publish `asset` as not built (its directory holds only the reason) and say so.

    For an evaluation arm whose data cannot be made: the materialization succeeds, so every
    other arm and the report are still made, and the report lists this one as missing.
    """
    with store.publish_dir(asset) as directory:
        write_not_built(directory, asset, reason, upstream)
    context.log.warning(f"{asset}: not built: {reason}")
    return dg.MaterializeResult(metadata={
        "path": path_md(store, asset), "built": False, "not_built_reason": reason,
        **({"not_built_upstream": upstream} if upstream else {})})


def placement(runtime: TorchRuntime) -> Placement:
    """Where the classifiers of a step train: the runtime's seed, device(s), data loading."""
    from synthfactory.ops.training.classifiers import Placement  # deferred: torch

    return Placement(seed=runtime.seed, device=runtime.torch_device, devices=runtime.devices,
                     in_memory_mb=runtime.in_memory_mb, workers=runtime.workers,
                     shuffle_buffer=runtime.shuffle_buffer, threads=runtime.threads,
                     deterministic=runtime.deterministic)


def open_configured_generator(params: Params, store: ArtifactStore,
                              runtime: TorchRuntime) -> tuple[Any, Any]:
    """The trained or pretrained generator as params configure it (with generator.adapt: lora,
    the LoRA fine-tuned on the real images fused in) and the sampler settings of
    `synthetic_shards`; every asset that generates images opens it here."""
    # deferred: torch and diffusers
    from synthfactory.ops.generation.generate import open_generator, read_adapter
    from synthfactory.ops.generation.samplers import SamplerSettings  # deferred: diffusers

    lora = (read_adapter(store.require("generator_adapter"))
            if params.generator.adapt == "lora" else None)
    model = open_generator(store.require("generator"), backend=params.generator.backend,
                           device=runtime.torch_device, dtype=runtime.torch_dtype,
                           compile_model=params.generator.compile, lora=lora)
    config = params.synthetic_shards
    return model, SamplerSettings(steps=config.steps, scheduler=config.scheduler,
                                  height=config.height, width=config.width)


def prune_partitions(context: dg.AssetExecutionContext, store: ArtifactStore, root: Sequence[str],
                     current: Sequence[str], owned: Callable[[Path], str | None]) -> None:
    """Remove what partitions the params no longer have from `store.path(*root)` (the asset's
    directory holds the table the params ask for, as a whole-directory publish did before the
    asset was partitioned, and as DVC records it). `owned(entry)` is the partition key a
    directory entry holds, None for what is no partition's; temporaries of runs in progress
    stay."""
    keep = set(current) | set(context.assets_def.partitions_def.get_partition_keys())
    # An object store that holds the asset committed as one unit (before it was partitioned)
    # would serve that unit instead of the partitions published since: withdraw its commit.
    store.retract(root[0])
    directory = store.path(*root)
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        key = owned(entry)
        if entry.name.startswith(TEMP_PREFIX) or key is None or key in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        store.retract(*entry.relative_to(store.local_root).parts)
        context.log.info(f"{root[0]}: removed {entry.name}, which the params no longer have")


def partition_metadata(context: dg.AssetExecutionContext, rows: Any,
                       to_metadata: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Each partition's own metadata, as the op reports a partition finished: `rows` yields
    plain dicts with the partition's `key`; `to_metadata` makes Dagster metadata of one."""
    for row in rows:
        context.add_asset_metadata(to_metadata(row), partition_key=row["key"])
