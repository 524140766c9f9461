"""Metadata a person reads in the Dagster UI: image grids (inline PNG in markdown), per-class
count tables. Small on purpose: a grid shows at most `per_class` images of each class."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np

from synthfactory.resources.store import ArtifactStore

GRID_PER_CLASS = 8


def image_grid_md(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                  title: str, per_class: int = GRID_PER_CLASS) -> dg.MetadataValue:
    """A markdown image (inline base64 PNG): one row per class, `per_class` images each."""
    from synthfactory.ops.evaluation.grids import image_grid
    from synthfactory.ops.report.plots import png_bytes

    grid = image_grid(images, labels, list(class_names), per_class=per_class)
    data = base64.b64encode(png_bytes(grid)).decode()
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{data})")


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
    from synthfactory.ops.storage.shards import load_arrays, read_samples

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
    from synthfactory.ops.storage.not_built import write_not_built

    with store.publish_dir(asset) as directory:
        write_not_built(directory, asset, reason, upstream)
    context.log.warning(f"{asset}: not built: {reason}")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(store.path(asset))),
        "built": False, "not_built_reason": reason,
        **({"not_built_upstream": upstream} if upstream else {})})
