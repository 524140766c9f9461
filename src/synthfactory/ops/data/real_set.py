"""The real dataset of `real_images`: loaded from its source, split train/val/test
(stratified, seeded; validation carved from train), checked for enough images per class and
split, then written as WebDataset shards with `classes.json` and `manifest.json`
(ops/data/real_images.py). Unreadable files are skipped and counted, other image modes
converted and counted; exact copies are kept on one side of every split and reported
(ops/data/duplicates.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.data.duplicates import copies_of, duplicate_groups, summarise_duplicates
from synthfactory.ops.data.images import concatenate
from synthfactory.ops.data.preflight import (check_split_counts, class_size_warnings, counts_of,
                                             describe_source, minimum_images)
from synthfactory.ops.data.real_images import list_classes, load_real, write_real_images
from synthfactory.ops.data.splits import carve_validation, few_shot_subset, stratified_split
from synthfactory.ops.storage.artifacts import Log


@dataclass(frozen=True)
class RealImagesSettings:
    """What the params fix of the real images (the `real_images` section as plain values, with
    the stored channels), the seed, the train images the graph needs, and what `manifest.json`
    records of them (`info`)."""

    source: str
    root: str | None
    test_root: str | None
    class_names: list[str] | None
    resolution: int
    channels: int
    test_fraction: float
    val_fraction: float
    shard_size: int
    few_shot: int | None
    seed: int
    train_needed: int
    info: dict[str, Any]


@dataclass
class RealSplit:
    """The loaded images and their splits, checked: `write` puts them into a directory."""

    dataset: Any
    splits: dict[str, np.ndarray]
    few_shot: np.ndarray | None
    settings: RealImagesSettings
    duplicates: dict[str, Any]

    @property
    def n_classes(self) -> int:
        return len(self.dataset.class_names)

    def write(self, directory: Path) -> dict[str, Any]:
        """Shards, `classes.json` and `manifest.json` into `directory`; the manifest."""
        return write_real_images(directory, self.dataset, self.splits, self.settings.shard_size,
                                 {**self.settings.info, "duplicates": self.duplicates},
                                 self.few_shot)


def split_real_images(settings: RealImagesSettings, warn: Log) -> RealSplit:
    """Load, split and check the real images; `warn` gets each class size warning, each count
    of skipped files and converted images, and what copies were found."""
    config, channels, seed = settings, settings.channels, settings.seed
    class_names = list_classes(config.source, config.root, config.class_names)
    dataset = load_real(config.source, config.root, config.resolution, channels, class_names)
    if config.test_root:
        # The user's own test set: every image of the root trains, every test_root image tests.
        n_train = len(dataset.labels)
        dataset = concatenate(dataset, load_real(config.source, config.test_root,
                                                 config.resolution, channels, class_names))
        train = np.arange(n_train)
        test = np.arange(n_train, len(dataset.labels))
    groups = duplicate_groups(dataset.images)
    duplicates = summarise_duplicates(groups, dataset.labels, dataset.sources,
                                      dataset.class_names)
    for warning in duplicates.warnings():  # before the counts are checked: copies shrink them
        warn(f"real_images: {warning}")
    if config.test_root:
        # The user's test set stays as given; a training image identical to one of its images
        # would be a leak, so it is left out (and counted).
        leaked = copies_of(groups, train, test)
        if leaked.any():
            dataset.skipped["identical to a test_root image (left out of training)"] += int(
                leaked.sum())
            train = train[~leaked]
    else:
        train, test = stratified_split(dataset.labels, config.test_fraction, seed, groups)
    # Validation comes out of train: every choice reads it, nothing learns from it.
    train, val = carve_validation(dataset.labels, train, config.val_fraction, seed, groups)
    # The CLI counted files before decoding; what decoded is checked again, before any training.
    split_sizes = counts_of(dataset.labels, {"train": train, "val": val, "test": test},
                            dataset.class_names)
    check_split_counts(split_sizes, describe_source(config.source, config.root, config.test_root),
                       minimum_images(config.test_fraction, config.val_fraction, seed,
                                      bool(config.test_root), settings.train_needed),
                       settings.train_needed)
    for warning in class_size_warnings(split_sizes):
        warn(f"real_images: {warning}")
    for reason, count in dataset.skipped.items():
        warn(f"real_images: skipped {count} file(s): {reason}")
    for mode, count in dataset.converted.items():
        warn(f"real_images: converted {count} image(s) from mode {mode} to "
             f"{'L' if channels == 1 else 'RGB'}")
    few_shot = (None if config.few_shot is None
                else few_shot_subset(dataset.labels, train, config.few_shot, seed))
    return RealSplit(dataset, {"train": train, "val": val, "test": test}, few_shot, settings,
                     duplicates.as_json())
