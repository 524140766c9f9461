"""Which distillation method makes the best small set? (prints JSON)

From the store's filtered set (`make run` first), build the distilled set with each method at
one ipc, train the evaluation classifier on it with the params' classifier recipe for every
seed, and score it on the real validation split — the procedure of the `distilled_set` →
`classifier_distilled` path, for all methods side by side. Choosing a method is a choice, so it
reads validation; only eval_report reads test.

    python benchmarks/distillation_methods.py [--params params.yaml] [--ipc 10]
        [--methods random herding kcenter dm]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from synthfactory.assets.evaluation import training_settings
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.distillation.coresets import select_herding, select_kcenter, select_random
from synthfactory.ops.distillation.dm import distribution_matching
from synthfactory.ops.evaluation.arms import filtered_arm
from synthfactory.ops.evaluation.metrics import mean_std
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.training.train import embed, load_classifier, predict_proba, train_classifier
from synthfactory.params import load_params


def main() -> None:
    """Distill with every method, train `n_seeds` classifiers on each, report validation
    accuracy (a method comparison is a choice: it never reads test)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--ipc", type=int, default=None, help="default: distilled_set.ipc")
    parser.add_argument("--methods", nargs="+", default=["random", "herding", "kcenter", "dm"])
    args = parser.parse_args()
    config = load_params(args.params)
    params, seed = config.params, config.runtime.seed
    store = Path(config.store.root)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ipc = args.ipc or params.distilled_set.ipc
    source = filtered_arm(store / "synthetic_shards", store / "filtered_set")
    val_images, val_labels, _ = read_split(store / "real_images", "val")
    n_classes = int(val_labels.max()) + 1
    judge = load_classifier(store / "judge" / "judge.safetensors", device)
    features = embed(judge, source.images, device=device)
    # The same seed as the distilled_set asset, so the `dm` / `random` rows reproduce it.
    distill_seed = derive_seed(seed, "distilled_set")
    recipe = params.classifiers
    results = {}
    for method in args.methods:
        started = time.perf_counter()
        if method == "dm":
            images, labels, _ = distribution_matching(
                source.images, source.labels, n_classes, ipc, seed=distill_seed, device=device,
                iterations=params.distilled_set.iterations,
                learning_rate=params.distilled_set.learning_rate,
                batch_real=params.distilled_set.batch_real)
        else:
            chosen = {"random": lambda: select_random(source.labels, ipc, distill_seed),
                      "herding": lambda: select_herding(features, source.labels, ipc),
                      "kcenter": lambda: select_kcenter(features, source.labels, ipc,
                                                        distill_seed)}[method]()
            images, labels = source.images[chosen], source.labels[chosen]
        distill_seconds = time.perf_counter() - started
        accuracies = []
        for seed_index in range(recipe.n_seeds):
            model, _ = train_classifier(
                images, labels, n_classes, seed=derive_seed(seed, "classifiers", seed_index),
                device=device, **training_settings(recipe, device))
            predicted = predict_proba(model, val_images, device=device).argmax(1)
            accuracies.append(float(np.mean(predicted == val_labels)))
        mean, std = mean_std(accuracies)
        results[method] = {"accuracy_mean": round(mean, 4), "accuracy_std": round(std, 4),
                           "accuracies": [round(a, 4) for a in accuracies],
                           "distill_seconds": round(distill_seconds, 1)}
    baseline = results.get("random", {}).get("accuracy_mean")
    for row in results.values():
        if baseline is not None:
            row["minus_random_points"] = round(100 * (row["accuracy_mean"] - baseline), 2)
    print(json.dumps({"benchmark": "distillation_methods", "ipc": ipc,
                      "source": f"filtered_set ({len(source.images)} images)",
                      "split": "val", "n_val": len(val_labels), "seeds": recipe.n_seeds, "device": str(device),
                      "methods": results}, indent=2))


if __name__ == "__main__":
    main()
