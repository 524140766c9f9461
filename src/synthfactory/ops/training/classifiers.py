"""Classifiers of one arm: `n_seeds` networks trained from scratch on a training set, with the
`classifiers` recipe, saved as `seed-<k>.safetensors` (the arm's `history.json` beside them is
written by `ops/evaluation/arm_training.py`).

Every classifier asset trains through here (the arms, the scaling curve, the closed loop), and
so does every benchmark: the same recipe and the same seeds (`derive_seed(seed, "classifiers",
k)`) for every arm, so arms differ by their data alone. A set on disk (a shard set) is loaded
when small, streamed above `in_memory_mb`, and dealt to ranks under DDP (torchrun).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.artifacts import Log
from synthfactory.ops.training.distributed import Recipe, train_distributed, write_job
from synthfactory.ops.training.recipes import precision_plan, recipe_for
from synthfactory.ops.training.shardsets import ShardSet
from synthfactory.ops.training.train import ClassifierSettings, save_classifier, train_classifier


@dataclass(frozen=True)
class Placement:
    """Where and how a set trains: the runtime's seed, device(s) and data-loading settings."""

    seed: int
    device: torch.device
    devices: int = 1
    in_memory_mb: float = 512
    workers: int = 2
    shuffle_buffer: int = 5000
    threads: int | None = None
    deterministic: bool = True


def training_settings(config: Any, device: torch.device,
                      steps: int | None = None) -> dict[str, Any]:
    """`ClassifierSettings` fields for `config` (the `classifiers` params section, read by
    attribute): the architecture's recipe with the section's overrides, the precision plan of
    the device, steps and augmentation; `steps` a shared budget's optimizer steps (None: the
    epochs decide). Every classifier asset and benchmark trains through this."""
    recipe = recipe_for(config.architecture, learning_rate=config.learning_rate,
                        batch_size=config.batch_size, weight_decay=config.weight_decay,
                        label_smoothing=config.label_smoothing)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return {"epochs": config.epochs, "min_steps": config.min_steps,
            "batch_size": recipe.batch_size, "learning_rate": recipe.learning_rate,
            "momentum": recipe.momentum, "weight_decay": recipe.weight_decay,
            "label_smoothing": recipe.label_smoothing, "width": config.width,
            "architecture": config.architecture, "augmentation": config.augmentation,
            "flip": config.flip, "steps": steps,
            "precision": precision_plan(config.precision, device.type, bf16_supported=bf16,
                                        channels_last=config.channels_last)}


def classifier_seeds(seed: int, n_seeds: int) -> list[int]:
    """The seeds of every arm's classifiers: arms differ by their data alone."""
    return [derive_seed(seed, "classifiers", index) for index in range(n_seeds)]


def train_seeds(images: np.ndarray, targets: np.ndarray, n_classes: int, config: Any,
                placement: Placement, directory: Path, label: str, log: Log,
                steps: int | None = None) -> list[dict[str, Any]]:
    """`config.n_seeds` classifiers on one training set in memory, `steps` optimizer steps
    each (None: the epochs decide), saved as `seed-<k>.safetensors` in `directory`; their
    histories."""
    settings = training_settings(config, placement.device, steps)
    histories = []
    directory.mkdir(parents=True, exist_ok=True)
    for seed_index, seed in enumerate(classifier_seeds(placement.seed, config.n_seeds)):
        histories.append(_train_seed(images, targets, n_classes, settings, seed_index, seed,
                                     placement, directory, label, log))
    return histories


def train_shard_set(shard_set: ShardSet, n_classes: int, config: Any, placement: Placement,
                    directory: Path, label: str, work: Path, log: Log,
                    steps: int | None = None) -> tuple[list[dict[str, Any]], bool]:
    """`config.n_seeds` classifiers on a shard set (loaded, streamed, or with DDP on
    `placement.devices` processes, in the scratch directory `work`); the histories and whether
    the set was streamed. `steps`: as train_seeds."""
    settings = training_settings(config, placement.device, steps)
    seeds = classifier_seeds(placement.seed, config.n_seeds)
    streamed = placement.devices > 1 or shard_set.decoded_mib > placement.in_memory_mb
    if placement.devices > 1:
        return train_ddp(shard_set, n_classes, seeds, settings, placement, directory, label,
                         work, log), streamed
    source = shard_set.source(in_memory_mb=placement.in_memory_mb, seed=0,
                              workers=placement.workers, shuffle_buffer=placement.shuffle_buffer)
    histories = []
    for seed_index, seed in enumerate(seeds):
        if streamed:
            source = source.with_seed(derive_seed(seed, "stream"))
        histories.append(_train_seed(source, None, n_classes, settings, seed_index, seed,
                                     placement, directory, label, log))
    return histories, streamed


def _train_seed(data: Any, targets: np.ndarray | None, n_classes: int,
                settings: dict[str, Any], seed_index: int, seed: int, placement: Placement,
                directory: Path, label: str, log: Log) -> dict[str, Any]:
    """One seed's classifier on `data` (arrays with `targets`, or a source with None), saved as
    `seed-<seed_index>.safetensors`; its history, logged in one line."""
    model, history = train_classifier(data, targets, n_classes, ClassifierSettings(**settings),
                                      seed=seed, device=placement.device)
    save_classifier(directory / f"seed-{seed_index}.safetensors", model)
    log(f"{label} seed {seed_index}: {history['steps']} steps, train accuracy "
        f"{history['train_accuracy']:.3f}")
    return {"seed_index": seed_index, **history}


def train_ddp(shard_set: ShardSet, n_classes: int, seeds: list[int], settings: dict[str, Any],
              placement: Placement, directory: Path, label: str, work: Path, log: Log
              ) -> list[dict[str, Any]]:
    """Every seed trained with DDP on `placement.devices` processes launched by torchrun."""
    shutil.rmtree(work, ignore_errors=True)
    plan = settings["precision"]
    recipe = Recipe(**{key: value for key, value in settings.items() if key != "precision"},
                    autocast=plan.autocast, channels_last=plan.channels_last)
    job = write_job(work, shard_set, n_classes=n_classes, seeds=seeds,
                    stream_seeds=[derive_seed(seed, "stream") for seed in seeds],
                    recipe=recipe, workers=placement.workers,
                    shuffle_buffer=placement.shuffle_buffer, out_dir=directory,
                    threads=placement.threads, deterministic=placement.deterministic)
    log(f"{label}: DDP on {placement.devices} processes (torchrun)")
    histories = train_distributed(job, devices=placement.devices, log=log)
    shutil.rmtree(work, ignore_errors=True)
    return [{"seed_index": index, **history} for index, history in enumerate(histories)]
