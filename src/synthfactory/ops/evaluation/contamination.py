"""The report's leakage check: how many synthetic images are near-copies of real test images.

`eval_report` (the one reader of test) embeds every synthetic image and every test image with the
judge and calls `measure_contamination`, which applies the rule of `curation/leakage.py` and
returns `metrics.json`'s `contamination` entry and a side-by-side grid. The count is stated even
when it is zero. For calibration, the same rule is applied to the real validation images: they
are independent of the test images, so any of them flagged means the thresholds are too loose
for this data, or the user's data holds the same image in two splits (a leak of its own).
Test labels are never read here: near-copies are counted per class of the synthetic image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synthfactory.ops.checks import CheckOutcome
from synthfactory.ops.curation.leakage import nearest_test, pixel_vectors, unit_rows
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.arms import TrainingData, read_filter_records
from synthfactory.ops.evaluation.plots import image_grid, png_bytes

if TYPE_CHECKING:  # report.py lists this module's section: import its blocks when building
    import torch

    from synthfactory.ops.evaluation.report import ReportSection

GRID = "contamination"  # the key of the pair grid in the report's grids, and its PNG's stem
LISTED = 100  # near-copies listed by key in metrics.json (the count covers all of them)


def measure_contamination(synthetic_images: np.ndarray, synthetic_labels: np.ndarray,
                          synthetic_keys: Sequence[str], test_images: np.ndarray,
                          test_keys: Sequence[str], val_images: np.ndarray,
                          embed: Callable[[np.ndarray], np.ndarray], class_names: Sequence[str],
                          *, feature_threshold: float, pixel_threshold: float,
                          pixel_resolution: int, grid_pairs: int,
                          kept_keys: set[str] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """`metrics.json`'s `contamination` entry and the side-by-side grid (synthetic | test).

    The grid shows the near-copies (up to `grid_pairs`), or, when there are none, the closest
    pairs in pixels so that a reader can see how far the nearest ones are. `kept_keys` (the
    filtered set's kept samples) adds how many near-copies the filter kept.
    """
    spaces = {"feature": (unit_rows(embed(synthetic_images)), unit_rows(embed(test_images))),
              "pixel": (pixel_vectors(synthetic_images, pixel_resolution),
                        pixel_vectors(test_images, pixel_resolution))}
    rule = {"feature_threshold": feature_threshold, "pixel_threshold": pixel_threshold}
    found = nearest_test(spaces["feature"][0], spaces["pixel"][0], spaces["feature"][1],
                         spaces["pixel"][1], **rule)
    baseline = nearest_test(embed(val_images), pixel_vectors(val_images, pixel_resolution),
                            spaces["feature"][1], spaces["pixel"][1], **rule)
    copies = np.flatnonzero(found.is_copy)
    per_class = {name: int(np.sum(synthetic_labels[copies] == index))
                 for index, name in enumerate(class_names)}
    shows_copies = len(copies) > 0
    # Closest first: the near-copies by their match's pixel similarity, else every image by its
    # pixel-nearest test image.
    partner = found.copy_index if shows_copies else found.pixel_index
    score = found.copy_pixel_similarity if shows_copies else found.pixel_similarity
    pool = copies if shows_copies else np.arange(len(synthetic_keys))
    shown = pool[np.argsort(-score[pool], kind="stable")][:grid_pairs]

    def row(index: int, test_index: int) -> dict[str, Any]:
        similarity = {space: round(float(query[index] @ test[test_index]), 6)
                      for space, (query, test) in spaces.items()}
        return {"key": synthetic_keys[index],
                "class_name": class_names[int(synthetic_labels[index])],
                "test_key": test_keys[test_index],
                "feature_similarity": similarity["feature"],
                "pixel_similarity": similarity["pixel"]}

    rows = [row(int(i), int(partner[i])) for i in shown]
    summary: dict[str, Any] = {
        "threshold": {"feature": feature_threshold, "pixel": pixel_threshold},
        "pixel_resolution": pixel_resolution,
        "count": len(copies),
        "n_synthetic": len(synthetic_keys),
        "n_test": len(test_keys),
        "per_class": per_class,
        "kept_by_filter": (None if kept_keys is None
                           else sum(synthetic_keys[i] in kept_keys for i in copies)),
        "near_copies": [row(int(i), int(found.copy_index[i])) for i in copies[:LISTED]],
        "nearest": {space: _spread(getattr(found, f"{space}_similarity"))
                    for space in ("feature", "pixel")},
        "real_val_baseline": {"count": int(baseline.is_copy.sum()), "n": len(val_images),
                              "nearest": {space: _spread(getattr(baseline, f"{space}_similarity"))
                                          for space in ("feature", "pixel")}},
        "grid": {"shows": "near-copies" if shows_copies else "closest pairs", "rows": rows},
    }
    pairs = [image for i in shown for image in (synthetic_images[i], test_images[partner[i]])]
    grid = image_grid(np.stack(pairs) if pairs else synthetic_images[:0],
                      np.repeat(np.arange(len(shown)), 2),
                      [str(position) for position in range(len(shown))], per_class=2)
    return summary, grid


def contamination_in_store(synthetic: TrainingData, test_images: np.ndarray,
                           test_keys: Sequence[str], real_dir: Path, judge_dir: Path,
                           filtered_dir: Path, class_names: Sequence[str], device: torch.device,
                           **settings: Any) -> tuple[dict[str, Any], np.ndarray]:
    """`measure_contamination` on what the assets wrote: the judge's features, the validation
    split for calibration, and the filtered set's kept keys. Test labels are not passed."""
    from synthfactory.ops.curation.judges import load_judge

    judge = load_judge(judge_dir, device)
    val_images, _, _ = read_split(real_dir, "val")
    kept = {record["key"] for record in read_filter_records(filtered_dir) if record["keep"]}
    return measure_contamination(synthetic.images, synthetic.labels, synthetic.keys, test_images,
                                 test_keys, val_images, judge.embed, class_names,
                                 kept_keys=kept, **settings)


def contamination_section(metrics: dict[str, Any],
                          grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The count of near-copies of test images (even when zero), per class, and the pair grid."""
    from synthfactory.ops.evaluation.report import Figure, Paragraph, ReportSection, Table

    entry = metrics.get("contamination")
    if not entry:
        return None
    threshold, baseline = entry["threshold"], entry["real_val_baseline"]
    blocks: list[Any] = [Paragraph(
        f"{entry['count']} of {entry['n_synthetic']} synthetic images are near-copies of one of "
        f"the {entry['n_test']} real test images (judge-feature cosine ≥ {threshold['feature']} "
        f"and pixel correlation at ≤{entry['pixel_resolution']} px ≥ {threshold['pixel']}, for "
        "the same test image). A near-copy lets an arm train on what it is tested on and "
        "inflates its accuracy.")]
    if entry["count"]:
        kept = entry.get("kept_by_filter")
        blocks.append(Paragraph(
            "Per class of the synthetic image: " + ", ".join(
                f"{name} {count}" for name, count in entry["per_class"].items() if count)
            + "." + ("" if kept is None else f" The filtered set keeps {kept} of them "
                     "(filtered_set.drop_test_near_duplicates removes them).")))
    blocks.append(Paragraph(
        f"Calibration: {baseline['count']} of {baseline['n']} real validation images (independent "
        "of the test images) pass the same rule; more than none means the thresholds are loose "
        "for this data or the data set holds the same image in two splits."))
    grid = entry.get("grid", {})
    if grid.get("rows") and GRID in grids:
        label = ("the near-copies" if grid["shows"] == "near-copies"
                 else "none is a near-copy; the closest pairs in pixels, for a look")
        blocks += [Paragraph(f"Each row: a synthetic image and its test image ({label})."),
                   Figure(f"{GRID}.png", "synthetic image | nearest real test image"),
                   Table(["row", "synthetic", "class", "test image", "feature cosine",
                          "pixel correlation"],
                         [[index, row["key"], row["class_name"], row["test_key"],
                           f"{row['feature_similarity']:.4f}", f"{row['pixel_similarity']:.4f}"]
                          for index, row in enumerate(grid["rows"])])]
    files = {f"{GRID}.png": png_bytes(grids[GRID])} if GRID in grids and grid.get("rows") else {}
    return ReportSection("Leakage: near-copies of test images", blocks, files)


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
