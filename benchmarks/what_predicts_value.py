"""Which measurement of the generated images predicts their training value? (prints JSON)

Sweeps the guidance recipe (`guidance_sweep.RECIPES`: 1, 2, 3 alone and the mixes) on a
finished run's generator, as `benchmarks/guidance_sweep.py` does (same generation, classifiers,
steps and replicates), and sets beside the synthetic arm's VALIDATION accuracy (pooled over
replicates × classifier seeds; the test split is eval_report's) every measurement the report
makes of the generated images, on replicate r0's set:

- the judge's feature space: Fréchet distance, KID, precision, recall, density, coverage and
  pairwise diversity against the real images the generator learned from
  (`ops/evaluation/quality.py`);
- memorization: the share of near-copies of those images (`ops/curation/copies.py`, threshold
  calibrated on real validation images at 1% false positives);
- recognisability: the share of generated images the judge assigns to their prompt's class.

Spearman's rank correlation of each measurement with accuracy, across settings (n = recipes)
and across (setting, class) cells (n = recipes × classes), each with a two-sided p-value:
exact over every permutation for n ≤ 8 (with 5 settings only ρ = ±1 reaches p < 0.05), else
from 20,000 seeded permutations. The cells are not independent (a setting's classes share its
generator draw), so their p-value is optimistic; the settings' one is honest but weak.

    python benchmarks/what_predicts_value.py --params params.yaml [--recipes '[1.0]' ...]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from guidance_sweep import parse_arguments, read_store, setup, sweep

MEASURES = ("fd", "kid", "precision", "recall", "density", "coverage", "diversity",
            "memorization", "judge_agreement")
PERMUTATIONS = 20_000


def rank_correlation(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Spearman's ρ of x and y with a two-sided permutation p-value (exact for n ≤ 8); None
    where a side is constant or a value is missing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": int(len(x))}

    def ranks(values: np.ndarray) -> np.ndarray:
        order = values.argsort(kind="stable")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(len(values))
        for value in np.unique(values):  # ties share their mean rank
            ranked[values == value] = ranked[values == value].mean()
        return ranked

    rx, ry = ranks(x), ranks(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if len(x) <= 8:
        shuffled = np.array([np.corrcoef(rx, ry[list(p)])[0, 1]
                             for p in itertools.permutations(range(len(x)))])
    else:
        generator = np.random.default_rng(seed)
        shuffled = np.array([np.corrcoef(rx, generator.permutation(ry))[0, 1]
                             for _ in range(PERMUTATIONS)])
    p = float(np.mean(np.abs(shuffled) >= abs(rho) - 1e-12))
    return {"rho": round(rho, 4), "p": round(p, 4), "n": int(len(x))}


def main() -> None:
    """Sweep, measure, correlate; print one JSON document."""
    from synthfactory.ops.curation.copies import calibrate, memorization
    from synthfactory.ops.curation.judges import load_judge
    from synthfactory.ops.evaluation.quality import generation_quality

    args = parse_arguments(__doc__ or "")
    config, recipes, device = setup(args)
    found = read_store(config)
    judge = load_judge(Path(config.store.root) / "judge", device, config.params.judge.batch_size)
    train_features = judge.embed(found.train_images)
    threshold = calibrate(found.train_images, found.val_images)
    names = found.class_names
    rows, cells = [], []
    for drawn in sweep(config, recipes, args.replicates, device, found):
        images, labels = drawn.images[0], drawn.labels[0]
        quality = generation_quality(judge.embed(images), labels, train_features,
                                     found.train_labels, class_names=names,
                                     encoder="judge", seed=config.runtime.seed)
        copies = memorization(images, labels, found.train_images, found.train_labels,
                              threshold, class_names=names)
        agreement = judge.predict_proba(images).argmax(1) == labels
        correct = drawn.val_predictions == found.val_labels[None, None, :]
        row: dict[str, Any] = {
            "guidance": drawn.recipe, "val_accuracy": round(float(correct.mean()), 4),
            **{key: quality["overall"].get(key) for key in MEASURES[:7]},
            "memorization": copies["rate"], "judge_agreement": float(agreement.mean())}
        rows.append(row)
        for label, name in enumerate(names):
            in_class = found.val_labels == label
            cells.append({
                "guidance": drawn.recipe, "class": name,
                "val_accuracy": float(correct[:, :, in_class].mean()),
                **{key: quality["per_class"][name].get(key) for key in MEASURES[:7]},
                "memorization": copies["per_class"][name]["rate"],
                "judge_agreement": float(agreement[labels == label].mean())})
        print(json.dumps(row), flush=True)

    def column(table: list[dict[str, Any]], key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else r[key] for r in table], dtype=float)

    correlations = {key: {"across_settings": rank_correlation(column(rows, key),
                                                              column(rows, "val_accuracy")),
                          "across_classes_and_settings": rank_correlation(
                              column(cells, key), column(cells, "val_accuracy"))}
                    for key in MEASURES}
    print(json.dumps({"benchmark": "what_predicts_value", "split": "val",
                      "n_val": len(found.val_labels), "replicates": args.replicates,
                      "steps": found.steps, "memorization_threshold": threshold,
                      "rows": rows, "correlations": correlations, "cells": cells,
                      "device": str(device)}, indent=2))


if __name__ == "__main__":
    main()
