"""Filter settings chosen on validation: train classifiers on what each setting keeps (prints JSON).

For each `filtered_set` setting (the shipped grid, or `--settings` as JSON objects), re-run the
filters on the store's synthetic images with its judge, train `classifiers.n_seeds` classifiers
on the kept images with the classifier assets' own recipe, seeds and steps (the finished run's
`classifier_filtered` budget: every setting trains as many steps as the arms it informs, however
many images it keeps), and score them on the REAL
VALIDATION split — never test: this is a choice, and only eval_report reads test. Every setting
is compared with the params file's own `filtered_set` (the grid's row that equals it), paired
over seeds and validation images (`vs_params`: difference, 95% interval, verdict).

    python benchmarks/filter_sweep.py --params params.yaml [--settings '{"threshold": 0.1}' ...]

Reads the store of a finished run (`synthfactory run` first): synthetic_shards, judge,
real_images, classifier_filtered (its steps). Each setting overrides the params file's
`filtered_set` keys it names.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

# The grid the filter table of docs/results.md and the default were chosen from: nothing, the
# quality flags alone, near-duplicates, confidence thresholds, the top fraction, and a zero-shot margin.
GRID: list[dict[str, Any]] = [
    {"confidence": False, "dedup": False, "quality": False},
    {"confidence": False, "dedup": False},
    {"confidence": False},
    {"threshold": 0.05},
    {"threshold": 0.1},
    {"threshold": 0.2},
    {"threshold": 0.5},
    {"threshold": None, "top_fraction": 0.8},
    {"threshold": None, "margin": 0.0},
]


def compare_with_params_setting(rows: list[dict[str, Any]], correct: list[Any]) -> None:
    """Add `vs_params` (difference, 95% interval, verdict) to every row but the one whose
    setting equals the params file's, paired with it over seeds and validation images
    (`correct`: each row's `ArmCorrectness`); nothing when no row is the params' setting."""
    from synthfactory.ops.evaluation.comparisons import compare

    reference = next((index for index, row in enumerate(rows) if row["is_params_setting"]), None)
    if reference is None:
        return
    for index, row in enumerate(rows):
        if index != reference:
            found = compare(correct[index], correct[reference])
            row["vs_params"] = {key: found[key] for key in ("difference", "ci95", "verdict")}


def main() -> None:
    """Filter with every setting, train on each kept set, report validation accuracy."""
    import torch

    from synthfactory.ops.training.classifiers import training_settings
    from synthfactory.ops.curation.filters import FilterSettings, filter_samples
    from synthfactory.ops.curation.judges import load_judge
    from synthfactory.ops.data.real_images import read_classes, read_split
    from synthfactory.ops.evaluation.arms import synthetic_arm
    from synthfactory.ops.evaluation.comparisons import ArmCorrectness
    from synthfactory.ops.evaluation.evaluate import trained_steps
    from synthfactory.ops.evaluation.metrics import mean_std
    from synthfactory.ops.seeds import derive_seed
    from synthfactory.ops.training.predict import predict_proba
    from synthfactory.ops.training.train import ClassifierSettings, train_classifier
    from synthfactory.params import load_params

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--settings", nargs="*", default=None,
                        help="JSON objects of filtered_set keys (default: the shipped grid)")
    args = parser.parse_args()
    config = load_params(args.params)
    params, seed = config.params, config.runtime.seed
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    store = Path(config.store.root)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    grid = [json.loads(text) for text in args.settings] if args.settings else GRID
    data = synthetic_arm(store / "synthetic_shards")
    class_names = read_classes(store / "real_images")
    val_images, val_labels, _ = read_split(store / "real_images", "val")
    judge = load_judge(store / "judge", device, params.judge.batch_size)
    features = judge.embed(data.images)
    probs = judge.predict_proba(data.images)
    base = params.filtered_set.model_dump(exclude={"min_pass_rate"})
    # The filtered arm's steps in the run: with the default equal_steps budget every setting
    # trains what the compared arms train (epochs alone would give a small kept set min_steps).
    steps = trained_steps(store / "classifier_filtered")
    settings_kwargs = training_settings(params.classifiers, device, steps=steps)
    rows, correct = [], []
    shipped = FilterSettings(**base)
    for override in grid:
        settings = FilterSettings(**{**base, **override})
        records, summary = filter_samples(data.keys, data.labels, probs, features, data.images,
                                          settings, class_names)
        kept = np.array([record["keep"] for record in records])
        started = time.perf_counter()
        accuracies, predictions = [], []
        for seed_index in range(params.classifiers.n_seeds):
            model, _ = train_classifier(
                data.images[kept], data.labels[kept], len(class_names),
                ClassifierSettings(**settings_kwargs),
                seed=derive_seed(seed, "classifiers", seed_index), device=device)
            predicted = predict_proba(model, val_images, device=device).argmax(1)
            predictions.append(predicted)
            accuracies.append(float(np.mean(predicted == val_labels)))
        mean, std = mean_std(accuracies)
        rows.append({"setting": override, "kept": int(kept.sum()),
                     "val_accuracy_mean": round(mean, 4), "val_accuracy_std": round(std, 4),
                     "val_accuracies": [round(a, 4) for a in accuracies],
                     "is_params_setting": settings == shipped,
                     "train_seconds": round(time.perf_counter() - started, 1)})
        correct.append(ArmCorrectness.from_predictions(json.dumps(override),
                                                       np.stack(predictions), val_labels))
        print(json.dumps(rows[-1]), flush=True)
    compare_with_params_setting(rows, correct)
    print(json.dumps({"benchmark": "filter_sweep", "split": "val", "n_val": len(val_labels),
                      "synthetic": len(data.images), "seeds": params.classifiers.n_seeds,
                      "steps": steps,
                      "base": base, "device": str(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
