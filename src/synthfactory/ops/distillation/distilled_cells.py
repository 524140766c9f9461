"""The cells of the distillation table that one run makes (`distilled_set`): each cell
distilled `repeats` times from its source and published on its own under `cells/<cell>/`, or
kept when a run before this one finished it from the same inputs, or recorded as not built when
its source cannot make it; and, when the run makes the headline cell (the table's first), the
`distilled` arm's files at the top of the asset's directory.

The source sets come from `source_of` (the evaluation's arms assemble them: a later stage), the
store through the `Artifacts` protocol: a crash keeps every cell finished before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from synthfactory.ops.curation.judge_record import judge_info
from synthfactory.ops.curation.judges import load_judge
from synthfactory.ops.data.preflight import TooFewImages, check_every_class
from synthfactory.ops.distillation.cells import TRAJECTORY_METHODS, WHOLE, Cell
from synthfactory.ops.distillation.cellstore import (cell_dir, cell_is_current, read_cell,
                                                     read_cell_record, write_cell)
from synthfactory.ops.distillation.coresets import class_members
from synthfactory.ops.distillation.dsa import DSA
from synthfactory.ops.distillation.experts import load_experts
from synthfactory.ops.distillation.export import to_uint8_nhwc
from synthfactory.ops.distillation.partitions import (CELLS, data_digest, expert_digest,
                                                      inputs_digest)
from synthfactory.ops.distillation.recipes import MethodSettings, distill
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.artifacts import Artifacts, Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.not_built import (NOT_BUILT_JSON, not_built_record, read_not_built,
                                                write_not_built)
from synthfactory.ops.storage.shards import Sample, sidecar_path, write_shard

ASSET = "distilled_set"
HEADLINE_SHARD = "distilled-00000.tar"
# What to change when a source lacks a class or holds fewer than ipc images of one.
SOURCE_FIX = {"filtered": "loosen filtered_set thresholds or raise prompts.images_per_class",
              "synthetic": "raise prompts.images_per_class",
              "real": "add real images to the class or lower distilled_set.ipcs"}


@dataclass(frozen=True)
class CellSettings:
    """What the params fix of the cells (the `distilled_set` section, as plain values): each
    method's settings, DSA (`strategy`, `fill`), labels (`hard` or `soft`), repeats (and the
    random cells' draws); the seed,
    the judge's batch size, and the experts a trajectory cell matches: how many, the
    `expert_trajectories` settings its digest records, and the recipe of `expert_digest`."""

    methods: MethodSettings
    dsa: dict[str, Any]
    labels: str
    repeats: int
    random_draws: int
    seed: int
    judge_batch_size: int
    n_experts: int
    experts: dict[str, Any]
    expert_recipe: dict[str, Any]


def distil_cells(store: Artifacts, table: list[Cell], chosen: list[Cell],
                 class_names: list[str], source_of: Callable[[str], Any],
                 settings: CellSettings, device: Any, log: Log, warn: Log
                 ) -> Iterator[dict[str, Any]]:
    """Make the `chosen` cells of `table`, one after the other; yield each cell's row as it is
    published: `key`, `path`, `built` (False: `not_built_reason`), `kept`, `seconds`.
    `source_of(source)` is a source's training set (images, labels, keys), read once per run."""
    judge = None
    sources: dict[str, Any] = {}
    for cell in chosen:
        cell_started = time.perf_counter()
        try:  # degrade, don't discard: a cell the data cannot make is recorded, not fatal
            if cell.source not in sources:  # one read of each source for all its cells
                sources[cell.source] = source_of(cell.source)
            data = sources[cell.source]
            check_every_class(data.labels, class_names, f"the {cell.source} set",
                              SOURCE_FIX[cell.source])
            if cell.method != WHOLE:  # every class holds at least ipc images
                class_members(data.labels, cell.ipc)
        except TooFewImages as error:
            with store.publish_dir(ASSET, CELLS, cell.key) as temp:
                write_not_built(temp, f"{ASSET} {cell.key}", str(error))
            warn(f"{cell.key}: not built: {error}")
            yield {"key": cell.key, "path": str(cell_dir(store.path(ASSET), cell)),
                   "built": False, "not_built_reason": str(error),
                   "seconds": round(time.perf_counter() - cell_started, 1)}
            if cell == table[0]:
                publish_headline(store, table, settings.labels, repeat_count(table[0], settings))
            continue
        needs_judge = _needs_judge(cell, settings)
        digest = _cell_digest(store, cell, data, settings, needs_judge)
        directory = cell_dir(store.path(ASSET), cell)
        if cell_is_current(directory, digest):
            log(f"{cell.key}: already finished from the same inputs, kept")
            store.push(ASSET, CELLS, cell.key)  # a crash may predate the upload
            kept = True
        else:
            if needs_judge and judge is None:
                judge = load_judge(store.require("judge"), device, settings.judge_batch_size)
            repeats = _distil_repeats(store, cell, data, len(class_names), judge, settings,
                                      device, log)
            seconds = time.perf_counter() - cell_started
            with store.publish_dir(ASSET, CELLS, cell.key) as temp:
                write_cell(temp, cell, repeats, {
                    "inputs_digest": digest, "labels": settings.labels,
                    "source_size": len(data.images),
                    # The method's own settings as they ran (dm's features: judge or
                    # random_convnet).
                    "settings": _method_config(cell, settings.methods),
                    "seconds": round(seconds, 3)})
            log(f"{cell.key}: {len(repeats)} repeat(s) in {seconds:.1f}s")
            kept = False
        yield {"key": cell.key, "path": str(directory), "built": True, "kept": kept,
               "seconds": time.perf_counter() - cell_started}
        if cell == table[0]:
            publish_headline(store, table, settings.labels, repeat_count(table[0], settings))


def _method_config(cell: Cell, methods: MethodSettings) -> dict[str, Any]:
    """The settings of the cell's method: mtt's for a trajectory cell, dm's, dc's or gm_init's
    for the other learned ones, none for a coreset."""
    return methods.section(cell.method)


def _needs_judge(cell: Cell, settings: CellSettings) -> bool:
    """Whether the cell reads the judge: a coreset in its feature space, soft labels, dm
    matching the judge's features."""
    return (cell.method in ("herding", "kcenter") or settings.labels == "soft"
            or (cell.method == "dm" and settings.methods.dm.get("features") == "judge"))


def _cell_digest(store: Artifacts, cell: Cell, data: Any, settings: CellSettings,
                 needs_judge: bool) -> str:
    """What the cell's bytes depend on: a cell finished from the same digest is kept."""
    trajectory_cell = cell.method in TRAJECTORY_METHODS
    return inputs_digest({
        "cell": cell.key, "data": data_digest(data),
        "method": _method_config(cell, settings.methods), "dsa": settings.dsa,
        "labels": settings.labels, "repeats": repeat_count(cell, settings),
        "architecture": settings.methods.architecture, "width": settings.methods.width,
        "seed": settings.seed,
        "judge": judge_info(store.require("judge"))["digest"] if needs_judge else None,
        "experts": settings.experts if trajectory_cell else None})


def _distil_repeats(store: Artifacts, cell: Cell, data: Any, n_classes: int, judge: Any,
                    settings: CellSettings, device: Any, log: Log) -> list[Any]:
    """The cell's `repeats` distilled sets (soft labels from the judge where the method
    learns none)."""
    features = (judge.embed(data.images) if judge is not None
                and cell.method in ("herding", "kcenter") else None)
    trajectories = (load_experts(store.require, cell, settings.n_experts,
                                 partial(expert_digest, data, settings.expert_recipe,
                                         settings.seed))
                    if cell.method in TRAJECTORY_METHODS else None)
    repeats = []
    for repeat in range(repeat_count(cell, settings)):
        result = distill(cell, data.images, data.labels, data.keys, n_classes,
                         seed=derive_seed(settings.seed, ASSET, cell.key, repeat),
                         device=device, dsa=DSA(**settings.dsa), settings=settings.methods,
                         features=features,
                         judge_embed=judge.embed_tensor if judge is not None else None,
                         trajectories=trajectories, log=log)
        # The whole source keeps its hard labels: it is HLR's hard-label upper bound.
        if settings.labels == "soft" and result.soft_labels is None and cell.method != WHOLE:
            result.soft_labels = judge.predict_proba(to_uint8_nhwc(result.images))
        repeats.append(result)
    return repeats


def repeat_count(cell: Cell, settings: CellSettings) -> int:
    """How many sets a cell distils: `random_draws` for random, one for the whole source
    (repeating it would only copy it; its networks still draw), else `repeats`."""
    if cell.method == WHOLE:
        return 1
    return settings.random_draws if cell.method == "random" else settings.repeats


def publish_headline(store: Artifacts, table: list[Cell], labels: str, repeats: int) -> None:
    """The headline cell's first repeat as the top-level shard (the `distilled` arm), or, when
    the headline cell was not built, the top-level `not_built.json` (the arm is reported
    missing); then `summary.json`. Each file is published atomically, the summary last."""
    headline = table[0]
    directory = cell_dir(store.path(ASSET), headline)
    tar = store.path(ASSET, HEADLINE_SHARD)
    summary: dict[str, Any] = {"method": headline.method, "ipc": headline.ipc,
                               "source": headline.source, "labels": labels,
                               "cells": [cell.key for cell in table], "repeats": repeats}
    record = read_not_built(directory)
    if record is not None:  # the distilled arm itself cannot be made
        for stale in (tar, sidecar_path(tar)):  # no old headline beside the record
            store.retract(ASSET, stale.name)
            stale.unlink(missing_ok=True)
        with store.publish_file(ASSET, NOT_BUILT_JSON) as temp:
            temp.write_text(dumps_json(not_built_record(
                ASSET, f"cell {headline.key}: {record['reason']}")))
    else:
        first = read_cell(directory)[0]
        pixels = to_uint8_nhwc(first.images)
        store.retract(ASSET, sidecar_path(tar).name)  # no old sidecar with the new tar
        shard = write_shard(tar, (
            Sample(key=f"d{i:06d}", image=pixels[i], label=int(first.labels[i]),
                   meta={"method": headline.method, "cell": headline.key,
                         **({"soft_label": first.soft_labels[i].round(6).tolist()}
                            if first.soft_labels is not None else {})})
            for i in range(len(pixels))))
        store.push(ASSET, tar.name)
        store.push(ASSET, sidecar_path(tar).name)
        store.retract(ASSET, NOT_BUILT_JSON)  # built now: an old record goes
        store.path(ASSET, NOT_BUILT_JSON).unlink(missing_ok=True)
        summary |= {"n_images": len(pixels), "sha256": shard.sha256,
                    "seconds": (read_cell_record(directory) or {}).get("seconds")}
    with store.publish_file(ASSET, SUMMARY_JSON) as temp:
        temp.write_text(dumps_json(summary))
