"""The report's leakage check: how many synthetic images are near-copies of real test images.

`eval_report` (the one reader of test) calls `contamination_in_store`: every test image and every
validation image is embedded with the judge; the synthetic images are scanned shard by shard
(their judge features from `shard_scores` where those describe the shard, their pixels from the
shard), by the rule of `curation/leakage.py`. It returns `metrics.json`'s `contamination` entry
and a side-by-side grid (`ops/report/contamination.py` words it). The count is stated
even when it is zero. For calibration, the same rule
is applied to the real validation images: they are independent of the test images, so any of
them flagged means the thresholds are too loose for this data, or the user's data holds the same
image in two splits (a leak of its own). Test labels are never read here: near-copies are
counted per class of the synthetic image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synthfactory.ops.checks import CheckOutcome
from synthfactory.ops.curation import FILTER_KEEP, JUDGE_JSON
from synthfactory.ops.curation.leakage import (NearestTest, nearest_in_reference,
                                               reference_of, scan_shards)
from synthfactory.ops.curation.scores import scores_are_current, scores_name
from synthfactory.ops.curation.selection import read_keep_masks
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.grids import image_grid
from synthfactory.ops.storage.shards import finished_shards, read_samples, read_shard_info

if TYPE_CHECKING:  # annotations only: the judge's device
    import torch

GRID = "contamination"  # the key of the pair grid in the report's grids, and its PNG's stem
LISTED = 100  # near-copies listed by key in metrics.json (the count covers all of them)


def measure_contamination(synthetic_images: np.ndarray, synthetic_labels: np.ndarray,
                          synthetic_keys: Sequence[str], test_images: np.ndarray,
                          test_keys: Sequence[str], val_images: np.ndarray,
                          embed: Callable[[np.ndarray], np.ndarray], class_names: Sequence[str],
                          *, feature_threshold: float, pixel_threshold: float,
                          pixel_resolution: int, grid_pairs: int,
                          kept_keys: set[str] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """`metrics.json`'s `contamination` entry and the side-by-side grid (synthetic | test), for
    synthetic images in memory (`contamination_in_store` streams them from the shards).

    The grid shows the near-copies (up to `grid_pairs`), or, when there are none, the closest
    pairs in pixels so that a reader can see how far the nearest ones are. `kept_keys` (the
    filtered set's kept samples) adds how many near-copies the filter kept.
    """
    test = reference_of(test_images, list(test_keys), embed, pixel_resolution)
    rule = {"feature_threshold": feature_threshold, "pixel_threshold": pixel_threshold}
    found = nearest_in_reference(synthetic_images, test, embed,
                                 pixel_resolution=pixel_resolution, **rule)
    baseline = nearest_in_reference(val_images, test, embed, pixel_resolution=pixel_resolution,
                                    **rule)
    kept = None if kept_keys is None else np.array([key in kept_keys for key in synthetic_keys])
    summary, shown = summarise_contamination(found, baseline, np.asarray(synthetic_labels),
                                             list(synthetic_keys), test.keys, class_names, kept,
                                             pixel_resolution=pixel_resolution,
                                             grid_pairs=grid_pairs, **rule)
    return summary, pair_grid([(synthetic_images[i], test_images[j]) for i, j in shown])


def summarise_contamination(found: NearestTest, baseline: NearestTest, labels: np.ndarray,
                            keys: list[str], test_keys: list[str], class_names: Sequence[str],
                            kept: np.ndarray | None, *, feature_threshold: float,
                            pixel_threshold: float, pixel_resolution: int,
                            grid_pairs: int) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The `contamination` entry from the nearest-test results of the synthetic images (`found`)
    and of the validation images (`baseline`), and the grid's (synthetic, test) index pairs.
    `kept` (bool per synthetic image, or None) says which the filtered set keeps."""
    copies = np.flatnonzero(found.is_copy)
    per_class = {name: int(np.sum(labels[copies] == index))
                 for index, name in enumerate(class_names)}
    shows_copies = len(copies) > 0
    # Closest first: the near-copies by their match's pixel similarity, else every image by its
    # pixel-nearest test image.
    if shows_copies:
        partner, feature, pixel = (found.copy_index, found.copy_feature_similarity,
                                   found.copy_pixel_similarity)
    else:
        partner, feature, pixel = (found.pixel_index, found.feature_at_pixel_nearest,
                                   found.pixel_similarity)
    pool = copies if shows_copies else np.arange(len(keys))
    shown = pool[np.argsort(-pixel[pool], kind="stable")][:grid_pairs]

    def row(index: int) -> dict[str, Any]:
        return {"key": keys[index], "class_name": class_names[int(labels[index])],
                "test_key": test_keys[int(partner[index])],
                "feature_similarity": round(float(feature[index]), 6),
                "pixel_similarity": round(float(pixel[index]), 6)}

    summary: dict[str, Any] = {
        "threshold": {"feature": feature_threshold, "pixel": pixel_threshold},
        "pixel_resolution": pixel_resolution,
        "count": len(copies),
        "n_synthetic": len(keys),
        "n_test": len(test_keys),
        "per_class": per_class,
        "kept_by_filter": None if kept is None else int(kept[copies].sum()),
        "near_copies": [row(int(i)) for i in copies[:LISTED]],
        "nearest": {space: _spread(getattr(found, f"{space}_similarity"))
                    for space in ("feature", "pixel")},
        "real_val_baseline": {"count": int(baseline.is_copy.sum()), "n": len(baseline.is_copy),
                              "nearest": {space: _spread(getattr(baseline, f"{space}_similarity"))
                                          for space in ("feature", "pixel")}},
        "grid": {"shows": "near-copies" if shows_copies else "closest pairs",
                 "rows": [row(int(i)) for i in shown]},
    }
    return summary, [(int(i), int(partner[i])) for i in shown]


def pair_grid(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One row per (synthetic, test) image pair; an empty grid when there is none."""
    images = [image for pair in pairs for image in pair]
    return image_grid(np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8),
                      np.repeat(np.arange(len(pairs)), 2),
                      [str(position) for position in range(len(pairs))], per_class=2)


def contamination_in_store(shards_dir: Path, scores_dir: Path, test_images: np.ndarray,
                           test_keys: Sequence[str], real_dir: Path, judge_dir: Path,
                           filtered_dir: Path, class_names: Sequence[str], device: torch.device,
                           *, feature_threshold: float, pixel_threshold: float,
                           pixel_resolution: int, grid_pairs: int
                           ) -> tuple[dict[str, Any], np.ndarray]:
    """The `contamination` entry and grid over every finished synthetic shard, one shard in memory
    at a time: judge features from `shard_scores` where a scores file describes the shard's
    bytes under this judge (else the judge embeds that shard), the validation split for
    calibration, the filtered set's keep masks for `kept_by_filter`. Test labels are not read.
    """
    # deferred: judges imports torch, and this module loads with the code location (the checks)
    from synthfactory.ops.curation.judges import load_judge

    judge = load_judge(judge_dir, device)
    info = json.loads((judge_dir / JUDGE_JSON).read_text())
    judge_digest = info.get("sha256") or info["digest"]
    tars = finished_shards(shards_dir)
    if not tars:
        raise FileNotFoundError(f"{shards_dir} has no finished shards: materialize "
                                "'synthetic_shards' first")
    shards: list[tuple[Path, Path | None]] = []
    for tar in tars:
        path = scores_dir / scores_name(tar.name)
        current = scores_are_current(path, shard_sha256=read_shard_info(tar).sha256,
                                     judge_digest=judge_digest)
        shards.append((tar, path if current else None))
    rule = {"feature_threshold": feature_threshold, "pixel_threshold": pixel_threshold}
    test = reference_of(test_images, list(test_keys), judge.embed, pixel_resolution)
    scanned = scan_shards(shards, test, judge.embed, pixel_resolution=pixel_resolution, **rule)
    val_images, _, _ = read_split(real_dir, "val")
    baseline = nearest_in_reference(val_images, test, judge.embed,
                                    pixel_resolution=pixel_resolution, **rule)
    masks = read_keep_masks(filtered_dir / FILTER_KEEP)
    kept = np.concatenate([masks[tar.name].astype(bool) if tar.name in masks
                           else np.zeros(read_shard_info(tar).count, bool) for tar in tars])
    summary, shown = summarise_contamination(scanned.near, baseline, scanned.labels,
                                             scanned.keys, test.keys, class_names, kept,
                                             pixel_resolution=pixel_resolution,
                                             grid_pairs=grid_pairs, **rule)
    # Only the pictured synthetic images are read again, from the shards that hold them.
    wanted = {scanned.keys[i]: i for i, _ in shown}
    image_of: dict[int, np.ndarray] = {}
    for number in sorted({int(scanned.shard_of[i]) for i, _ in shown}):
        for sample in read_samples([tars[number]]):
            if sample.key in wanted:
                image_of[wanted[sample.key]] = (sample.image if sample.image.ndim == 3
                                                else sample.image[:, :, None])
    return summary, pair_grid([(image_of[i], test_images[j]) for i, j in shown])


def contamination_outcome(metrics: dict[str, Any]) -> CheckOutcome:
    """Passes when no synthetic image is a near-copy of a test image; fails with the count."""
    entry = metrics["contamination"]
    details = {key: entry[key] for key in ("count", "n_synthetic", "threshold", "per_class",
                                           "kept_by_filter", "real_val_baseline")}
    if entry["count"] == 0:
        return CheckOutcome(True, f"no near-copy of the {entry['n_test']} test images among "
                                  f"{entry['n_synthetic']} synthetic images", details)
    classes = ", ".join(f"{name} {count}" for name, count in entry["per_class"].items() if count)
    return CheckOutcome(False, f"{entry['count']} of {entry['n_synthetic']} synthetic images are "
                               f"near-copies of real test images ({classes}): the synthetic arms "
                               "train on what they are tested on; see the report's leakage "
                               "section, or set filtered_set.drop_test_near_duplicates", details)


def _spread(values: np.ndarray) -> dict[str, float]:
    """Median, 99th percentile and maximum of nearest-test similarities (0.0 for none)."""
    if len(values) == 0:
        return {"median": 0.0, "p99": 0.0, "max": 0.0}
    return {"median": round(float(np.median(values)), 6),
            "p99": round(float(np.quantile(values, 0.99)), 6),
            "max": round(float(np.max(values)), 6)}
