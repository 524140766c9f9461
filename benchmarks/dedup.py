"""What near-duplicate removal removes, in the judge's feature space and in the space the filter
uses (`filters.dedup_features`: mean-removed thumbnails), on the store of `make run` (prints JSON).

For each space and threshold:
- how alike distinct images of one class already are (pairwise cosine within a class: median,
  99th percentile, max; and the median nearest-neighbour cosine);
- what the filter's dedup step removes from the samples that pass the other filters (walked in
  the filter's order, most confident first), and how different each removed image is from the
  one it was called a copy of (mean absolute difference in grey levels, 0-255);
- planted copies: `--planted` seeded candidates each get a copy appended (exact; Gaussian noise
  of σ 4, 8 and 16 grey levels; contrast 0.8 and brightness +20), one kind at a time: how many
  copies are found as duplicates of their original, how alike they are (lowest cosine), and
  how many distinct images are removed with them.

    python benchmarks/dedup.py [--store data] [--params params.yaml] [--thresholds 0.98 0.99]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np


def within_class_cosines(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pairwise cosine of distinct images of one class, over all classes."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pairs, nearest = [], []
    for label in np.unique(labels):
        members = unit[labels == label]
        similarity = members @ members.T
        pairs.append(similarity[np.triu_indices(len(members), 1)])
        np.fill_diagonal(similarity, -np.inf)
        nearest.append(similarity.max(axis=1))
    values, nearest_values = np.concatenate(pairs), np.concatenate(nearest)
    return {"median": round(float(np.median(values)), 4),
            "p99": round(float(np.quantile(values, 0.99)), 4),
            "max": round(float(values.max()), 4),
            "nearest_neighbour_median": round(float(np.median(nearest_values)), 4)}


def grey_difference(images: np.ndarray, first: int, second: int) -> float:
    """Mean absolute pixel difference of two uint8 images, in grey levels."""
    return float(np.abs(images[first].astype(np.int16) - images[second].astype(np.int16)).mean())


COPY_KINDS = ("exact", "noise_sigma_4", "noise_sigma_8", "noise_sigma_16", "contrast_0.8_plus_20")


def planted_copies(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A copy of each image: exact, with seeded Gaussian noise, or with contrast/brightness."""
    if kind == "exact":
        return images.copy()
    if kind.startswith("noise_sigma_"):
        sigma = float(kind.rsplit("_", 1)[1])
        noise = np.random.default_rng(seed).normal(0.0, sigma, images.shape)
        return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)
    if kind == "contrast_0.8_plus_20":
        return np.clip(np.round(images * 0.8 + 20), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown copy kind {kind!r}")


def measure(space: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
            order: np.ndarray, threshold: float, planted: np.ndarray, seed: int) -> dict:
    """Removals among the filter's candidates, and planted copies found, in one space."""
    from synthfactory.ops.curation.filters import near_duplicates

    features = space(images)
    duplicate, group = near_duplicates(features, labels, order, threshold=threshold)
    removed = np.flatnonzero(duplicate)
    differences = [grey_difference(images, index, group[index]) for index in removed]
    result: dict = {"removed": len(removed), "removed_mean_abs_grey_difference": (
        {"min": round(min(differences), 1), "median": round(float(np.median(differences)), 1),
         "max": round(max(differences), 1)} if differences else None), "planted": {}}
    for kind in COPY_KINDS:
        copies = planted_copies(images[planted], kind, seed)
        both = np.concatenate([images, copies])
        both_labels = np.concatenate([labels, labels[planted]])
        copy_index = np.arange(len(images), len(both))
        # The originals come first in the walk: a copy is the duplicate, not the representative.
        duplicate, group = near_duplicates(space(both), both_labels,
                                           np.concatenate([order, copy_index]),
                                           threshold=threshold)
        found = int(np.sum(duplicate[copy_index] & (group[copy_index] == planted)))
        unit = space(both)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        cosine = np.sum(unit[planted] * unit[copy_index], axis=1)
        result["planted"][kind] = {
            "found": found, "planted": len(planted),
            "distinct_removed": int(duplicate[:len(images)].sum()),
            "copy_cosine_min": round(float(cosine.min()), 4),
            "copy_mean_abs_grey_difference": round(float(np.mean(
                np.abs(copies.astype(np.int16) - images[planted].astype(np.int16)))), 1)}
    return result


def main() -> None:
    """Measure both spaces on the store and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="data")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None,
                        help="default: filtered_set.dedup_threshold of --params")
    parser.add_argument("--planted", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from synthfactory.ops.curation.filters import FilterSettings, dedup_features, filter_samples
    from synthfactory.ops.curation.judges import load_judge
    from synthfactory.ops.data.real_images import read_classes
    from synthfactory.ops.evaluation.arms import synthetic_arm
    from synthfactory.params import load_params

    torch.set_num_threads(1)
    params = load_params(args.params).params
    store = Path(args.store)
    data = synthetic_arm(store / "synthetic_shards")
    class_names = read_classes(store / "real_images")
    judge = load_judge(store / "judge", torch.device("cpu"), params.judge.batch_size)
    judge_features = judge.embed(data.images)
    probs = judge.predict_proba(data.images)
    settings = FilterSettings(**params.filtered_set.model_dump(exclude={"min_pass_rate"}))
    # The filter without dedup says which samples reach the dedup step, and in which order.
    records, _ = filter_samples(data.keys, data.labels, probs, judge_features, data.images,
                                dataclasses.replace(settings, dedup=False),
                                class_names)
    alive = np.array([record["keep"] for record in records])
    confidence = np.array([record["confidence"] for record in records])
    order = np.flatnonzero(alive)[np.argsort(-confidence[alive], kind="stable")]
    planted = np.sort(np.random.default_rng(args.seed).choice(order, args.planted, replace=False))
    spaces: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "judge_features": judge.embed,
        "dedup_features": lambda images: dedup_features(images, judge.embed(images)),
    }
    thresholds = args.thresholds or [settings.dedup_threshold]
    report: dict = {
        "benchmark": "dedup", "store": str(store), "images": len(data.images),
        "reaching_dedup": int(alive.sum()), "planted_per_kind": args.planted,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "spaces": {}}
    for name, space in spaces.items():
        entry = {"within_class_cosine": within_class_cosines(space(data.images), data.labels)}
        for threshold in thresholds:
            entry[f"threshold_{threshold}"] = measure(space, data.images, data.labels, order,
                                                      threshold, planted, args.seed)
        report["spaces"][name] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
