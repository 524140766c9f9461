"""The classifiers' learning rate chosen on validation across image folders (prints JSON).

`classifiers.learning_rate` is one rate for every arm and every dataset a user points the
shipped params at, so it is chosen where it must hold: on the real validation split of several
finished runs' stores (the embedded digits, and the 16-px folders of
`benchmarks/beyond_digits.py`). For each store and rate it trains the real arm's classifier
(the ConvNet of `ClassifierSettings`' defaults, weight decay 5e-4, augmentation, no flip) for
`--steps` optimizer steps (the compared arms' equal budget; the digits': 240) on the store's
real train split, `--seeds` seeds, and prints the validation accuracy of each seed and the
training accuracy (a diverged run reads ~0.1 on both). The test split is never read.

    python benchmarks/classifier_rate.py --store data/real_images beyond-digits/*/data/real_images \
        --rates 0.1 0.05 0.02 [--steps 240] [--seeds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import ClassifierSettings, train_classifier


def rate_row(store: Path, rate: float, steps: int, seeds: int) -> dict[str, object]:
    """Validation and training accuracy of `seeds` real-arm classifiers at one rate."""
    train_images, train_labels, _ = read_split(store, "train")
    val_images, val_labels, _ = read_split(store, "val")
    n_classes = len(read_classes(store))
    device = torch.device("cpu")
    started = time.perf_counter()
    val, train = [], []
    for seed in range(seeds):
        settings = ClassifierSettings(learning_rate=rate, steps=steps)
        model, history = train_classifier(train_images, train_labels, n_classes, settings,
                                          seed=seed, device=device)
        predicted = predict_proba(model, val_images, device=device).argmax(1)
        val.append(round(float(np.mean(predicted == val_labels)), 4))
        train.append(round(float(history["train_accuracy"]), 4))
    return {"store": str(store), "image_shape": list(train_images.shape[1:]),
            "n_train": len(train_labels), "n_val": len(val_labels), "learning_rate": rate,
            "steps": steps, "val_accuracy": val, "val_mean": round(float(np.mean(val)), 4),
            "train_accuracy": train, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    """Every store × rate, one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, nargs="+", required=True,
                        help="real_images directories of finished runs")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [rate_row(store, rate, args.steps, args.seeds)
            for store in args.store for rate in args.rates]
    print(json.dumps({"benchmark": "classifier_rate", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
