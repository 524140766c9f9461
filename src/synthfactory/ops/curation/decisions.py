"""The filter's decisions over every scored shard: which shards have scores of their current
bytes under the current judge, which samples are kept and why (quality flags, CLIP score, judge
confidence, margin, near-copies of each other and, optionally, of real test images), the
summary with per-class pass rates, and the images of the samples that the kept and rejected
grids show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.curation import FILTER_KEEP, FILTER_MANIFEST
from synthfactory.ops.curation.filters import FilterSettings
from synthfactory.ops.curation.leakage import scored_near_copies
from synthfactory.ops.curation.scores import read_scores_metadata, scores_name
from synthfactory.ops.curation.selection import (ScoredShard, Selection, grid_picks,
                                                 select_from_scores, summarise_selection,
                                                 write_keep_masks, write_manifest)
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.artifacts import Artifacts, Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import ShardInfo, read_samples, read_shard_info


@dataclass
class FilterDecisions:
    """The decisions and what they were made from."""

    selection: Selection
    summary: dict[str, Any]
    usable: list[ScoredShard]  # the shards decided over
    left_out: list[str]  # shards without current scores
    shard_digests: dict[str, str]  # shard name → sha256, of the usable shards

    def write(self, directory: Path, class_names: list[str]) -> None:
        """`manifest.jsonl`, `keep.safetensors` and `summary.json` into `directory`."""
        write_manifest(directory / FILTER_MANIFEST, self.selection, class_names)
        write_keep_masks(directory / FILTER_KEEP, self.selection.shard_keep_masks())
        (directory / SUMMARY_JSON).write_text(dumps_json(self.summary))


def decide_filter(store: Artifacts, judge: dict[str, Any], settings: FilterSettings, *,
                  class_names: list[str], seed: int, device: Any, batch_size: int,
                  contamination: dict[str, Any], warn: Log) -> FilterDecisions:
    """The filter's decisions over every finished synthetic shard whose scores describe its
    current bytes under the current `judge` (its judge.json record); the others are left out
    with a warning. With `drop_test_near_duplicates`, near-copies of test images by the
    `contamination` thresholds go too."""
    sidecars = {path.with_suffix(".tar").name: read_shard_info(path.with_suffix(".tar"))
                for path in store.require_files("synthetic_shards", "shard-*.json")}
    usable, left_out = current_scores(sidecars, store.require_files(
        "shard_scores", "scores-*.safetensors"), judge["digest"])
    if left_out:
        warn(f"filtered_set: {len(left_out)} shard(s) have no scores of their current bytes "
             f"under the current judge and are left out: {left_out}; materialize shard_scores "
             "for them")
    near_copies = (near_test_copies(store.require, device, batch_size, contamination)
                   if settings.drop_test_near_duplicates else None)
    return filter_decisions(
        usable, left_out, sidecars, settings, clip=judge["kind"] == "clip", seed=seed,
        spill_dir=store.path(".spill"), class_names=class_names, near_copies=near_copies,
        shards_dir=store.path("synthetic_shards"))


def current_scores(sidecars: dict[str, ShardInfo], scores: list[Path], judge_digest: str
                   ) -> tuple[list[ScoredShard], list[str]]:
    """The shards (tar name → sidecar) whose scores describe their current bytes under the
    judge, and the names of the others."""
    by_name = {path.name: path for path in scores}
    usable, left_out = [], []
    for name, info in sorted(sidecars.items()):
        path = by_name.get(scores_name(name))
        metadata = read_scores_metadata(path) if path is not None else {}
        if (metadata.get("shard_sha256") == info.sha256
                and metadata.get("judge_digest") == judge_digest):
            usable.append(ScoredShard(name, path))
        else:
            left_out.append(name)
    return usable, left_out


def filter_decisions(usable: list[ScoredShard], left_out: list[str],
                     sidecars: dict[str, ShardInfo], settings: FilterSettings, *,
                     clip: bool, seed: int, spill_dir: Path, class_names: list[str],
                     near_copies: Callable[[list[ScoredShard]], Any] | None, shards_dir: Path
                     ) -> FilterDecisions:
    """Decide over the `usable` shards (of `shards_dir`; none is an error). `near_copies` (with
    `drop_test_near_duplicates`) gives the near-copies of test images among them and their
    matches (`near_test_copies`)."""
    if not usable:
        raise FileNotFoundError(f"no synthetic shard under {shards_dir} has current scores: "
                                "materialize 'shard_scores' (all partitions)")
    test_copies, test_matches = near_copies(usable) if near_copies is not None else (None, None)
    spill_dir.mkdir(parents=True, exist_ok=True)
    selection = select_from_scores(usable, settings, clip=clip, seed=seed, spill_dir=spill_dir,
                                   test_copies=test_copies, test_matches=test_matches)
    summary = summarise_selection(selection, class_names, settings)
    agreement = float(np.mean(selection.predicted == selection.labels))
    shard_digests = {shard.name: sidecars[shard.name].sha256 for shard in usable}
    summary.update({"judge_agreement": agreement, "shards_used": list(shard_digests),
                    "shard_digests": shard_digests})
    return FilterDecisions(selection, summary, usable, left_out, shard_digests)


def near_test_copies(require: Callable[..., Path], device: Any, batch_size: int,
                     thresholds: dict[str, Any]) -> Callable[[list[ScoredShard]], Any]:
    """The near-copies of real test images among scored shards (`scored_near_copies`), with the
    store's `require` for the tars, the real images and the judge."""
    def find(usable: list[ScoredShard]) -> Any:
        return scored_near_copies(
            [(require("synthetic_shards", shard.name), shard.scores_path) for shard in usable],
            require("real_images"), require("judge"), device, batch_size=batch_size,
            **thresholds)
    return find


def grid_images(require: Callable[..., Path], selection: Selection, per_class: int
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The images of the kept and rejected grids' samples (the first `per_class` of each
    class), read from only the shards that hold them (`require`: the store's)."""
    picks = grid_picks(selection, per_class)
    wanted = {selection.key(i): i for indices in picks.values() for i in indices}
    shard_names = sorted({selection.shards[int(selection.shard_index[i])] for i in wanted.values()})
    image_of = {}
    for name in shard_names:
        for sample in read_samples([require("synthetic_shards", name)]):
            if sample.key in wanted:
                image_of[sample.key] = (sample.image if sample.image.ndim == 3
                                        else sample.image[:, :, None])
    grids = {}
    for grid, indices in picks.items():
        if indices:
            images = np.stack([image_of[selection.key(i)] for i in indices])
        else:
            images = np.zeros((0, 1, 1, 1), np.uint8)
        grids[grid] = (images, selection.labels[indices])
    return grids
