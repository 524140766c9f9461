"""The shipped classifier recipe from 1k to 50k training images (prints JSON).

Issue 26 asks that one recipe (`classifiers`: epochs, learning rate, width, `min_steps`, the
`equal_steps` budget) be sound "from 1k to 50k images". The embedded digits have 1,797; this
renders larger folders from them, the way `benchmarks/beyond_digits.py` does, and runs the real
arm of the shipped params on each through the CLI (`synthfactory run --select`, checks included):

- the digits are split once, per class, into training originals (70%) and test originals
  (30%, seeded); the test folder draws every test original once, and is the same for every
  size (`real_images.test_root`), so no digit is on both sides;
- a folder of N training images draws every training original ceil(N / originals) times, each
  time with a fresh distortion (and, for the coloured folder, fresh colours and texture).

Per size it prints the real arm's steps (the recipe's: `classifiers.epochs` over the set, at
least `min_steps`), its validation accuracy and that of its control (the same recipe trained
`control_steps` = 2× as long; the report's `real_below_control` bound is 0.95), its training
accuracy, its test accuracy with the report's 95% interval (bootstrap over seeds and test
images), each larger size against the smallest (paired over seeds and the same test images:
difference, interval, verdict), and the seconds. What the validation split means here: it is
carved from the training folder, so above 1k it holds other distortions of training originals
— it measures the fit (what the control's ratio asks: is the budget long enough?), not
generalisation; the test folder measures generalisation.

    python benchmarks/recipe_at_scale.py [--folder colour16-textured] [--sizes 1000 10000 50000]
                                         [--work DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from beyond_digits import FOLDERS, Folder, run_cli  # this script's folder is on sys.path when it runs

from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.evaluation.comparisons import ArmCorrectness, arm_interval, compare
from synthfactory.ops.evaluation.evaluate import checkpoints
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import load_classifier

ROOT = Path(__file__).resolve().parents[1]

TEST_FRACTION = 0.3
SELECTION = "key:prompts or key:real_images or key:classifier_real"


def split_originals(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the digits' training and test originals (70/30, stratified by class)."""
    labels = load_digits().target
    return train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                            random_state=seed, stratify=labels)


def render(folder: Folder, originals: np.ndarray, copies: int, directory: Path,
           seed: int) -> int:
    """`copies` distorted draws of every original into `<directory>/<class>/<index>-<k>.png`;
    the count."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for index in originals:
        label_dir = directory / str(digits.target[index])
        label_dir.mkdir(parents=True, exist_ok=True)
        for copy in range(copies):
            pixels = folder.render(digits.images[index], rng, folder.resolution)
            Image.fromarray(pixels).save(label_dir / f"{index:05d}-{copy:03d}.png")
    return len(originals) * copies


def size_params(shipped: dict[str, Any], folder: Folder, train: Path, test: Path, work: Path,
                threads: int | None) -> dict[str, Any]:
    """The shipped params with the folders, resolution and channels, and a store of its own."""
    params = json.loads(json.dumps(shipped))  # a deep copy
    params["real_images"].update(source="imagefolder", root=str(train), test_root=str(test),
                                 resolution=folder.resolution, channels=folder.channels)
    params["store"] = {"root": str(work / "data")}
    if threads is not None:
        params["runtime"]["threads"] = threads
    return params


def test_correctness(store: Path, name: str) -> ArmCorrectness:
    """Which test-folder images each seed of the store's real arm gets right (the test folder is
    the same for every size, read in the same order: sizes pair image by image)."""
    images, labels, _ = read_split(store / "real_images", "test")
    device = torch.device("cpu")
    predictions = np.stack([
        predict_proba(load_classifier(path, device), images, device=device).argmax(1)
        for path in checkpoints(store / "classifier_real")])
    return ArmCorrectness.from_predictions(name, predictions, labels)


def test_row(correct: ArmCorrectness) -> dict[str, Any]:
    """The real arm's test accuracy, the report's 95% interval and each seed's accuracy."""
    interval = arm_interval(correct)
    seeds = np.asarray(correct.correct)[0]
    return {"n_test": seeds.shape[1], "accuracy": interval["accuracy"], "ci95": interval["ci95"],
            "seeds": [round(float(seed.mean()), 4) for seed in seeds]}


def with_smallest(rows: list[dict[str, Any]], correct: list[ArmCorrectness]) -> None:
    """Each larger size's test accuracy against the smallest's, paired over seeds and the same
    test images (`vs_smallest`: difference, 95% interval, verdict)."""
    for row, arm in zip(rows[1:], correct[1:], strict=True):
        found = compare(arm, correct[0])
        row["test"]["vs_smallest"] = {key: found[key] for key in ("difference", "ci95", "verdict")}


def run_size(folder: Folder, size: int, shipped: dict[str, Any], work: Path, test: Path,
             threads: int | None) -> tuple[dict[str, Any], ArmCorrectness]:
    """Render a training folder of about `size` images, run the real arm on it, summarise; the
    summary and the arm's test correctness."""
    train_originals, _ = split_originals()
    copies = max(1, math.ceil(size / len(train_originals)))
    images = render(folder, train_originals, copies, work / "train", seed=1 + size)
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(
        size_params(shipped, folder, work / "train", test, work, threads)))
    exit_code, seconds = run_cli(params_file, work, SELECTION)
    if exit_code != 0:
        raise RuntimeError(f"{folder.name} at {size}: synthfactory run exited {exit_code}; "
                           f"see {work / 'run.log'}")
    store = work / "data"
    history = json.loads((store / "classifier_real" / "history.json").read_text())
    control = history["control"]
    correct = test_correctness(store, f"n{size}")
    return {"training_images": images, "originals": len(train_originals), "copies": copies,
            "classes": len(read_classes(store / "real_images")),
            "n_train": history["n_train"], "steps": history["budget"]["steps"],
            "images_seen": history["budget"]["images_seen"],
            "train_accuracy": [round(s["train_accuracy"], 4) for s in history["seeds"]],
            "val_accuracy": [round(v, 4) for v in control["arm_val_accuracies"]],
            "n_val": control["n_val"],
            "control": {"steps": control["steps"],
                        "val_accuracy": round(control["val_accuracy"], 4),
                        "real_vs_control": round(control["arm_val_accuracy"]
                                                 / control["val_accuracy"], 4)},
            "test": test_row(correct), "seconds": round(seconds, 1)}, correct


def main() -> None:
    """Run every size one after the other and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="colour16-textured", choices=sorted(FOLDERS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000],
                        help="training images per folder (rounded up to whole draws)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=Path("recipe-at-scale"))
    parser.add_argument("--threads", type=int, default=None,
                        help="runtime.threads for each run (default: the params')")
    args = parser.parse_args()
    folder = FOLDERS[args.folder]
    shipped = yaml.safe_load(args.params.read_text())
    work = args.work.resolve() / folder.name
    _, test_originals = split_originals()
    test = work / "test"
    if not test.is_dir():
        render(folder, test_originals, 1, test, seed=0)
    rows, correct = zip(*(run_size(folder, size, shipped, work / f"n{size}", test, args.threads)
                          for size in args.sizes), strict=True)
    with_smallest(list(rows), list(correct))
    print(json.dumps({"benchmark": "recipe_at_scale", "folder": folder.name,
                      "params": str(args.params), "cpu_count": os.cpu_count(),
                      "test_images": len(test_originals), "sizes": list(rows)}, indent=2))


if __name__ == "__main__":
    main()
