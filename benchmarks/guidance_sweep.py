"""The guidance recipe chosen on validation, with paired intervals (prints JSON).

`prompts.guidance` is a list of classifier-free guidance scales cycled over each class's images.
Its default was once chosen on the test split; this re-chooses it where choices belong: for each
recipe, generate the synthetic set with the store's generator (the params' prompts, sampler and
image count), train `classifiers.n_seeds` classifiers on it with the compared arms' recipe and
steps (the finished run's `classifier_synthetic` budget), and score them on the REAL VALIDATION
split — the test split is eval_report's alone.

Every recipe is drawn `--replicates` times (replicate r0 uses the params' seed, r1 … the derived
seeds of `ops.seeds.replicate_seed`, as the replicate assets do). A replicate's records carry
the same per-image seeds under every recipe (the seeds derive from the index, not the scale),
so recipes differ only in guidance: common random numbers, paired in the comparison. Each
recipe is compared with the current default by the report's paired bootstrap
(`ops.evaluation.comparisons.compare`: replicates × classifier seeds × validation images).

The choice: the recipe with the best validation mean; if the current default is
indistinguishable from it, the default stays (every scale costs the same here — the embedded
DDPM always runs the conditional and the unconditional pass — so there is no cheaper one to
prefer), and the output says which rule decided.

    python benchmarks/guidance_sweep.py --params params.yaml [--recipes '[1.0]' '[2.0]' ...]

Reads the store of a finished run (`synthfactory run` first): generator, real_images,
classifier_synthetic (its steps).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The recipes the default is chosen from: each scale alone, and the mixes.
RECIPES: list[list[float]] = [[1.0], [2.0], [3.0], [1.0, 2.0], [1.0, 2.0, 3.0]]


@dataclass
class Drawn:
    """One recipe's sets and classifiers: the images of each replicate (r0 first), and the
    classifiers' predicted validation labels (replicates × seeds × images)."""

    recipe: list[float]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    val_predictions: np.ndarray
    seconds: float


@dataclass
class Store:
    """What a sweep reads of a finished run: the real splits, the compared arms' steps."""

    class_names: list[str]
    val_images: np.ndarray
    val_labels: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray
    steps: int


def read_store(config: Any) -> Store:
    """The real splits and the compared arms' steps of the finished run in `config`'s store."""
    from synthfactory.ops.data.real_images import read_classes, read_split
    from synthfactory.ops.evaluation.arms import real_arm
    from synthfactory.ops.evaluation.evaluate import trained_steps

    store = Path(config.store.root)
    val_images, val_labels, _ = read_split(store / "real_images", "val")
    train = real_arm(store / "real_images")  # what the generator learned from
    return Store(read_classes(store / "real_images"), val_images, val_labels, train.images,
                 train.labels, trained_steps(store / "classifier_synthetic"))


def sweep(config: Any, recipes: list[list[float]], replicates: int, device: Any,
          found: Store) -> list[Drawn]:
    """Generate every recipe's set in each replicate, train `classifiers.n_seeds` classifiers
    on it (the compared arms' steps) and predict the validation split (see the module
    docstring)."""
    import torch

    from synthfactory.ops.data.prompts import expand_prompts
    from synthfactory.ops.data.real_images import read_image_shape
    from synthfactory.ops.generation.generate import generate_samples, open_generator
    from synthfactory.ops.generation.samplers import SamplerSettings
    from synthfactory.ops.seeds import replicate_ids, replicate_seed
    from synthfactory.ops.training.classifiers import Placement, train_seeds
    from synthfactory.ops.training.predict import predict_proba
    from synthfactory.ops.training.train import load_classifier

    params, store = config.params, Path(config.store.root)
    image_shape = read_image_shape(store / "real_images")
    generator = open_generator(store / "generator", backend=params.generator.backend,
                               device=device, dtype=torch.float32)
    shards = params.synthetic_shards
    sampler = SamplerSettings(steps=shards.steps, scheduler=shards.scheduler,
                              height=shards.height, width=shards.width)
    drawn = []
    for recipe in recipes:
        started = time.perf_counter()
        images, labels, predictions = [], [], []
        for replicate in replicate_ids(replicates):
            seed = replicate_seed(config.runtime.seed, replicate)
            records = expand_prompts(found.class_names, params.prompts.images_per_class,
                                     params.prompts.templates, recipe,
                                     params.prompts.negative_prompt, seed,
                                     strategy=params.prompts.strategy)
            samples = list(generate_samples(generator, records, batch_size=shards.batch_size,
                                            settings=sampler, image_shape=image_shape))
            images.append(np.stack([sample.image for sample in samples]))
            labels.append(np.array([sample.label for sample in samples]))
            with tempfile.TemporaryDirectory() as directory:
                train_seeds(images[-1], labels[-1], len(found.class_names), params.classifiers,
                            Placement(seed=seed, device=device), Path(directory),
                            f"guidance {recipe} {replicate}", lambda message: None,
                            found.steps)
                predictions.append([
                    predict_proba(load_classifier(path, device), found.val_images,
                                  device=device).argmax(1)
                    for path in sorted(Path(directory).glob("seed-*.safetensors"))])
        drawn.append(Drawn(recipe, images, labels, np.asarray(predictions),
                           time.perf_counter() - started))
        print(json.dumps({"guidance": recipe, "seconds": round(drawn[-1].seconds, 1)}),
              flush=True)
    return drawn


def parse_arguments(description: str) -> argparse.Namespace:
    """--params, --recipes (JSON lists; default RECIPES), --replicates."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--recipes", nargs="*", default=None,
                        help="JSON lists of guidance scales (default: the shipped grid)")
    parser.add_argument("--replicates", type=int, default=2)
    return parser.parse_args()


def setup(args: argparse.Namespace) -> tuple[Any, list[list[float]], Any]:
    """The params, the recipes (the default appended when missing) and the device."""
    import torch

    from synthfactory.params import load_params

    config = load_params(args.params)
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    recipes = [json.loads(text) for text in args.recipes] if args.recipes else list(RECIPES)
    default = list(config.params.prompts.guidance)
    if default not in recipes:
        recipes.append(default)
    return config, recipes, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main() -> None:
    """Every recipe scored on validation; each compared with the default; the choice."""
    from synthfactory.ops.evaluation.comparisons import ArmCorrectness, compare
    from synthfactory.ops.seeds import replicate_ids

    args = parse_arguments(__doc__ or "")
    config, recipes, device = setup(args)
    default, seed = list(config.params.prompts.guidance), config.runtime.seed
    found = read_store(config)
    replicates = replicate_ids(args.replicates)
    correct = {json.dumps(one.recipe): ArmCorrectness.from_predictions(
        json.dumps(one.recipe), one.val_predictions, found.val_labels, tuple(replicates))
        for one in sweep(config, recipes, args.replicates, device, found)}
    baseline = correct[json.dumps(default)]
    rows = []
    for name, arm in correct.items():
        row: dict[str, Any] = {"guidance": json.loads(name),
                               "val_accuracy": round(arm.accuracy, 4)}
        if row["guidance"] != default:
            row["vs_default"] = compare(arm, baseline, seed=seed)
        rows.append(row)
    best = max(rows, key=lambda row: row["val_accuracy"])
    keeps_default = best["guidance"] == default or best["vs_default"]["verdict"] != "better"
    print(json.dumps({
        "benchmark": "guidance_sweep", "split": "val", "n_val": len(found.val_labels),
        "images_per_class": config.params.prompts.images_per_class, "steps": found.steps,
        "seeds": config.params.classifiers.n_seeds, "replicates": replicates,
        "default": default, "best": best["guidance"],
        "chosen": default if keeps_default else best["guidance"],
        "rule": ("the best recipe is the default" if best["guidance"] == default else
                 "the default is indistinguishable from the best on validation: kept (every "
                 "scale costs the same two UNet passes per step)" if keeps_default else
                 "the best recipe is better than the default on validation"),
        "device": str(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
