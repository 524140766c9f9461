"""The classifiers' learning rate and width chosen on validation across image folders (JSON).

`classifiers.learning_rate` is one rate for every arm and every dataset a user points the
shipped params at, so it is chosen where it must hold: on the real validation split of several
finished runs' stores (the embedded digits, and the 16-px folders of
`benchmarks/beyond_digits.py`). For each store and rate it trains the real arm's classifier
(the ConvNet of `ClassifierSettings`' defaults, weight decay 5e-4, augmentation, no flip) for
`--steps` optimizer steps (the compared arms' equal budget; the digits': 240) on the store's
real train split, `--seeds` seeds, and prints the validation accuracy of each seed and the
training accuracy (a diverged run reads ~0.1 on both). `--widths` does the same for the
ConvNet's width (`classifiers.width`). Each store's first setting is the reference: every other
setting of that store is compared with it, paired over seeds and validation images
(`ops.evaluation.comparisons.compare`: the difference, its 95% interval and verdict).
`--train-shards` trains on a finished run's shards instead (e.g. `data/synthetic_shards`: the
synthetic arm, harder than the real one, whose validation accuracy saturates on the digits),
one shard directory per store, still scored on the store's real validation split. The test
split is never read.

    python benchmarks/classifier_rate.py --store data/real_images beyond-digits/*/data/real_images \
        --rates 0.1 0.05 0.02 [--widths 128 64] [--steps 240] [--seeds 3] [--threads 1] \
        [--train-shards data/synthetic_shards beyond-digits/*/data/synthetic_shards]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.evaluation.comparisons import ArmCorrectness, compare
from synthfactory.ops.storage.shards import finished_shards, load_arrays
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import ClassifierSettings, train_classifier


def rate_row(store: Path, rate: float, width: int, steps: int, seeds: int,
             train_shards: Path | None = None) -> tuple[dict[str, object], ArmCorrectness]:
    """Validation and training accuracy of `seeds` classifiers at one rate and width, trained
    on the store's real train split (or on `train_shards`), with their validation correctness
    (for the paired comparison)."""
    if train_shards is None:
        train_images, train_labels, _ = read_split(store, "train")
    else:
        train_images, train_labels, _ = load_arrays(finished_shards(train_shards))
    val_images, val_labels, _ = read_split(store, "val")
    n_classes = len(read_classes(store))
    device = torch.device("cpu")
    started = time.perf_counter()
    val, train, predictions = [], [], []
    for seed in range(seeds):
        settings = ClassifierSettings(learning_rate=rate, steps=steps, width=width)
        model, history = train_classifier(train_images, train_labels, n_classes, settings,
                                          seed=seed, device=device)
        predicted = predict_proba(model, val_images, device=device).argmax(1)
        predictions.append(predicted)
        val.append(round(float(np.mean(predicted == val_labels)), 4))
        train.append(round(float(history["train_accuracy"]), 4))
    row = {"store": str(store), "trained_on": str(train_shards or "real train split"),
           "image_shape": list(train_images.shape[1:]),
           "n_train": len(train_labels), "n_val": len(val_labels), "learning_rate": rate,
           "width": width, "steps": steps, "val_accuracy": val,
           "val_mean": round(float(np.mean(val)), 4), "train_accuracy": train,
           "seconds": round(time.perf_counter() - started, 1)}
    name = f"lr{rate}-w{width}"
    return row, ArmCorrectness.from_predictions(name, np.stack(predictions), val_labels)


def main() -> None:
    """Every store × rate × width, one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, nargs="+", required=True,
                        help="real_images directories of finished runs")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    parser.add_argument("--widths", type=int, nargs="+", default=[128],
                        help="ConvNet widths (the first rate × first width is the reference)")
    parser.add_argument("--train-shards", type=Path, nargs="+", default=None,
                        help="train on these shard directories, one per --store, in order")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_shards is not None and len(args.train_shards) != len(args.store):
        parser.error(f"--train-shards names {len(args.train_shards)} directories for "
                     f"{len(args.store)} stores: give one per store, in the same order")
    shard_dirs = args.train_shards or [None] * len(args.store)
    rows = []
    for store, train_shards in zip(args.store, shard_dirs, strict=True):
        reference = None
        for rate in args.rates:
            for width in args.widths:
                row, correct = rate_row(store, rate, width, args.steps, args.seeds,
                                        train_shards)
                if reference is None:
                    reference = correct
                else:
                    found = compare(correct, reference)
                    row["vs_reference"] = {key: found[key] for key in
                                           ("a", "b", "difference", "ci95", "verdict")}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "classifier_rate", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
