"""The evaluation arms: what each one answers, which assets its data comes from, and how that
data is read from the directories the assets wrote.

`ARMS` is the registry, one `Arm` record per arm, in the order the report shows them within
their group (references, then synthetic, then combined). Everything else follows from it: the
`classifier_<arm>` assets and their upstream dependencies, the choices `classifiers.arms`
accepts, the grouped arm table. To add an arm: write a loader `(require) -> TrainingData` in
this module (`require(asset)` is the directory an upstream asset wrote, e.g.
`ArtifactStore.require`), and append an `Arm` to `_REGISTRY`. An arm without a loader trains no
classifier: `eval_report` computes it itself (`zero_shot`).

Data loading stays behind the loaders here, so a different reader (streaming, sharded for DDP)
changes these functions, not the assets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthfactory.ops.curation import FILTER_KEEP, FILTER_MANIFEST
from synthfactory.ops.curation.selection import read_keep_masks
from synthfactory.ops.data.preflight import TooFewImages
from synthfactory.ops.data.real_images import read_training_images
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.storage.shards import finished_shards, load_arrays, read_samples
from synthfactory.ops.training.shardrefs import shard_refs
from synthfactory.ops.training.shardsets import ShardSet


@dataclass
class TrainingData:
    """Images (uint8 N×H×W×C), hard labels, training targets (hard, or N×K soft), and provenance."""

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    keys: list[str]
    sources: list[str]


# The files of a classifier directory: `seed-<k>.safetensors` and `HISTORY_JSON` (defined in
# ops/training, which the distillation table's networks read too).
# The classifiers of the scaling curve: `<asset>/fraction-<f>/seed-<k>.safetensors`.
SCALING_ASSET = "classifier_scaling"

# The directory an upstream asset wrote (`ArtifactStore.require`): how loaders find their data.
Require = Callable[[str], Path]
Group = Literal["reference", "synthetic", "combined"]
# The report's groups, in order, with their headings.
GROUPS: dict[Group, str] = {"reference": "references", "synthetic": "synthetic",
                            "combined": "combined"}


# Who trains an arm's classifiers: the generic `classifier_<arm>` asset of assets/evaluation.py
# (from `load`), another module's `classifier_<arm>` (distilled: the DD protocol of
# assets/distillation.py; refined/uniform: the loop's rounds in assets/refinement.py), or nobody
# (zero_shot: the CLIP judge itself is the reference).
TrainedBy = Literal["evaluation", "distillation", "refinement", "nobody"]


@dataclass(frozen=True)
class Arm:
    """One row of the arms table.

    `upstream`: the assets whose output `load` reads (the generic classifier asset's
    dependencies). `load`: its training data; None when `trained_by` is not `evaluation`.
    `needs`: a condition on the configuration: `clip_judge` (zero_shot), or `refinement`
    (refined, targeted_base, uniform_plan, uniform: added by `refinement.rounds` > 0, never
    listed in `classifiers.arms`).
    `fix`: what to change when the arm's data lacks a class (the arm is then recorded as not
    built with this advice; empty: rebuild its upstream assets with every class).
    """

    name: str
    group: Group
    question: str
    upstream: tuple[str, ...] = ()
    load: Callable[[Require], TrainingData] | None = None
    trained_by: TrainedBy = "evaluation"
    needs: Literal["clip_judge", "refinement"] | None = None
    fix: str = ""

    @property
    def missing_class_fix(self) -> str:
        """What to change when this arm's training data lacks a class."""
        return self.fix or f"rebuild {', '.join(self.upstream)} with images of every class"

    @property
    def classifier_asset(self) -> str | None:
        """The asset holding this arm's `seed-<k>.safetensors` and history.json, if any."""
        return None if self.trained_by == "nobody" else f"classifier_{self.name}"


def real_arm(real_dir: Path) -> TrainingData:
    """The real train split (or its few-shot subset)."""
    images, labels, keys = read_training_images(real_dir)
    return TrainingData(images, labels, labels, keys, sources=[real_dir.name])


def synthetic_arm(shards_dir: Path) -> TrainingData:
    """Every finished synthetic shard; `sources` names the shards used."""
    shards = finished_shards(shards_dir)
    if not shards:
        raise FileNotFoundError(f"{shards_dir} has no finished shards: materialize "
                                "'synthetic_shards' (all partitions or a range) first")
    images, labels, keys = load_arrays(shards)
    return TrainingData(images, labels, labels, keys, sources=[p.name for p in shards])


def read_filter_records(filtered_dir: Path) -> list[dict[str, Any]]:
    """The per-sample records of a filtered set (one per synthetic sample it scored)."""
    path = filtered_dir / FILTER_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize 'filtered_set' first")
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def filtered_arm(shards_dir: Path, filtered_dir: Path) -> TrainingData:
    """The synthetic samples the filtered set keeps (read from the shards it scored)."""
    records = read_filter_records(filtered_dir)
    kept = {r["key"] for r in records if r["keep"]}
    shard_names = sorted({r["shard"] for r in records})
    paths = [shards_dir / name for name in shard_names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"filtered_set refers to shards {missing} that are gone from "
                                f"{shards_dir}: re-materialize 'filtered_set'")
    samples = [s for s in read_samples(paths) if s.key in kept]
    if not samples:
        raise TooFewImages("the filtered set keeps no sample: loosen filtered_set thresholds")
    images = np.stack([s.image if s.image.ndim == 3 else s.image[:, :, None] for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    return TrainingData(images, labels, labels, [s.key for s in samples], sources=shard_names)


def distilled_arm(distilled_dir: Path) -> TrainingData:
    """The distilled images, with the judge's soft labels as targets when the set has them.

    A distilled set recorded as not built raises `TooFewImages` with its reason.
    """
    record = read_not_built(distilled_dir)
    if record is not None:
        raise TooFewImages(f"distilled_set was not built: {record['reason']}")
    shards = finished_shards(distilled_dir)
    if not shards:
        raise FileNotFoundError(f"{distilled_dir} has no finished shards: materialize "
                                "'distilled_set' first")
    samples = list(read_samples(shards))
    images = np.stack([s.image if s.image.ndim == 3 else s.image[:, :, None] for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    targets: np.ndarray = labels
    if all("soft_label" in s.meta for s in samples):
        targets = np.asarray([s.meta["soft_label"] for s in samples], dtype=np.float32)
    return TrainingData(images, labels, targets, [s.key for s in samples],
                        sources=[p.name for p in shards])


def retrieved_arm(retrieved_dir: Path) -> TrainingData:
    """The pool images retrieved for each class, labelled with the class they were retrieved for."""
    shards = finished_shards(retrieved_dir)
    if not shards:
        raise FileNotFoundError(f"{retrieved_dir} has no finished shards: materialize "
                                "'retrieved_set' first")
    if next(iter(read_samples(shards, decode=False)), None) is None:
        raise TooFewImages(f"retrieved_set holds no image ({retrieved_dir}): point "
                           "retrieval.pool at images of every class")
    images, labels, keys = load_arrays(shards)
    return TrainingData(images, labels, labels, keys, sources=[p.name for p in shards])


def mixed_arm(real_dir: Path, shards_dir: Path, filtered_dir: Path) -> TrainingData:
    """The real training images (train, or its few-shot subset) plus the filtered synthetic set."""
    real = real_arm(real_dir)
    synthetic = filtered_arm(shards_dir, filtered_dir)
    if real.images.shape[1:] != synthetic.images.shape[1:]:
        raise ValueError(f"real images are {real.images.shape[1:]} but synthetic ones "
                         f"{synthetic.images.shape[1:]}: re-materialize synthetic_shards at "
                         "real_images.resolution")
    labels = np.concatenate([real.labels, synthetic.labels])
    return TrainingData(np.concatenate([real.images, synthetic.images]), labels, labels,
                        real.keys + synthetic.keys, sources=real.sources + synthetic.sources)


_REGISTRY = [
    Arm("real", "reference", "the ceiling: the classifier on the real training images",
        ("real_images",), lambda require: real_arm(require("real_images")),
        fix="add real images to that class (or remove the class)"),
    Arm("zero_shot", "reference", "what the CLIP judge gets with no training at all",
        trained_by="nobody", needs="clip_judge"),
    Arm("retrieved", "reference", "would real images retrieved from an unlabeled pool do as "
        "well as generating? (as many per class as the synthetic arm)",
        ("retrieved_set",), lambda require: retrieved_arm(require("retrieved_set")),
        fix="point retrieval.pool at images of every class"),
    Arm("synthetic", "synthetic", "every generated image, no real image seen by the classifier",
        ("synthetic_shards",), lambda require: synthetic_arm(require("synthetic_shards")),
        fix="materialize every shard of synthetic_shards"),
    Arm("filtered", "synthetic", "the generated images the filter keeps",
        ("synthetic_shards", "filtered_set"),
        lambda require: filtered_arm(require("synthetic_shards"), require("filtered_set")),
        fix="loosen filtered_set thresholds or raise prompts.images_per_class"),
    # The headline cell of the distillation table, evaluated by the DD protocol (DSA, its own
    # evaluation recipe) in assets/distillation.py; `distilled_arm` reads its images.
    Arm("distilled", "synthetic", "a few learned or selected images per class (the first cell "
        "of the distillation table)", trained_by="distillation"),
    # The closed loop's 2×2 at equal image budget (allocation × recipe; ops/refinement/plan.py).
    Arm("refined", "synthetic", "extra images aimed at the weak classes with the plan's recipe "
        "(a plan made on validation): do they beat the same number spread evenly?",
        trained_by="refinement", needs="refinement"),
    Arm("targeted_base", "synthetic", "the plan's allocation with the base recipe: targeting "
        "alone", trained_by="refinement", needs="refinement"),
    Arm("uniform_plan", "synthetic", "as many extra images spread evenly with the plan's recipe: "
        "the recipe alone", trained_by="refinement", needs="refinement"),
    Arm("uniform", "synthetic", "the equal-budget control: as many extra images spread evenly "
        "over the classes with the base recipe", trained_by="refinement", needs="refinement"),
    Arm("mixed", "combined", "does synthetic data help on top of the real training images?",
        ("real_images", "synthetic_shards", "filtered_set"),
        lambda require: mixed_arm(require("real_images"), require("synthetic_shards"),
                                  require("filtered_set"))),
]
ARMS: dict[str, Arm] = {arm.name: arm for arm in _REGISTRY}
# Replicates (the top-level `replicates: R`): the assets that hold a draw of the randomness
# downstream of the generator's weights — the prompts' sampling seeds, the shards, their scores,
# the filter — and, through `replicated_assets`, the classifiers of the arms trained on them.
# Everything else (the real split, the generator, the judge, retrieval, the distillation cells
# with their own repeats, the closed loop) is one draw, shared by every replicate.
REPLICATED_DATA = ("prompts", "synthetic_shards", "shard_scores", "filtered_set")


def replicated_assets(arms: list[str] | tuple[str, ...]) -> list[str]:
    """The assets each replicate makes again: REPLICATED_DATA and the `classifier_<arm>` of every
    configured arm that `classifier_<arm>` trains from them (synthetic, filtered, mixed)."""
    classifiers = [asset for arm in arm_order(list(arms))
                   if (asset := ARMS[arm].classifier_asset) is not None
                   and ARMS[arm].trained_by == "evaluation"
                   and set(ARMS[arm].upstream) & set(REPLICATED_DATA)]
    return [*REPLICATED_DATA, *classifiers]


# What `classifiers.arms` is by default: every arm that is cheap on the embedded run (zero_shot
# needs a CLIP judge; the presets that have one list it).
DEFAULT_ARMS = ("real", "retrieved", "synthetic", "filtered", "distilled", "mixed")


def arm_order(names: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """`names` in report order: by group, then registry order; names not registered last, sorted."""
    known = [arm.name for group in GROUPS for arm in _REGISTRY
             if arm.group == group and arm.name in names]
    return known + sorted(set(names) - set(known))


def check_arms(names: list[str], *, judge_backend: str,
               floors: dict[str, float] | None = None) -> list[str]:
    """`classifiers.arms` in report order, if every name is a registered arm, none repeats, the
    configuration meets each arm's `needs`, and `eval_report.accuracy_floor` names only chosen
    arms; else a ValueError naming the bad values and the choices."""
    unknown = [name for name in names if name not in ARMS]
    if unknown:
        raise ValueError(f"classifiers.arms {unknown} are not arms; choose from "
                         f"{', '.join(ARMS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"classifiers.arms lists {repeated} more than once")
    if not names:
        raise ValueError("classifiers.arms is empty: list at least one arm, e.g. [real]")
    for name in names:
        if ARMS[name].needs == "clip_judge" and judge_backend != "clip":
            raise ValueError(f"classifiers.arms lists {name}, which needs judge.backend: clip; "
                             "remove it or use a CLIP judge")
        if ARMS[name].needs == "refinement":
            raise ValueError(f"classifiers.arms lists {name}, which refinement.rounds > 0 adds "
                             "by itself; remove it from classifiers.arms")
    added = {name for name, arm in ARMS.items() if arm.needs == "refinement"}
    stray = sorted(set(floors or {}) - set(names) - added)
    if stray:
        raise ValueError(f"eval_report.accuracy_floor names {stray}, which are not in "
                         f"classifiers.arms {names}")
    return arm_order(names)


def configured_arms(names: list[str], *, judge_backend: str,
                    floors: dict[str, float] | None = None, refinement: bool = False) -> list[str]:
    """Every arm a report of this configuration has, in report order: `classifiers.arms`
    (validated by `check_arms`) and, with `refinement` (rounds > 0), the arms the loop adds
    (those whose `needs` is refinement)."""
    chosen = check_arms(names, judge_backend=judge_backend, floors=floors)
    if not refinement:
        return chosen
    return arm_order([*chosen, *(name for name, arm in ARMS.items() if arm.needs == "refinement")])


# The same arms as shard sets: what a classifier streams when the set is too large for memory
# (or trains under DDP), read without loading the images.


def synthetic_shard_set(shards_dir: Path, image_shape: tuple[int, int, int]) -> ShardSet:
    """Every finished synthetic shard."""
    paths = finished_shards(shards_dir)
    if not paths:
        raise FileNotFoundError(f"{shards_dir} has no finished shards: materialize "
                                "'synthetic_shards' (all partitions or a range) first")
    return ShardSet(shard_refs(paths), image_shape)


def filtered_shard_set(shards_dir: Path, filtered_dir: Path,
                    image_shape: tuple[int, int, int]) -> ShardSet:
    """The shards the filtered set scored, each with its keep mask."""
    masks = read_keep_masks(filtered_dir / FILTER_KEEP)
    paths = [shards_dir / name for name in sorted(masks)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"filtered_set refers to shards {missing} that are gone from "
                                f"{shards_dir}: re-materialize 'filtered_set'")
    shard_set = ShardSet(shard_refs(paths, masks), image_shape)
    if shard_set.n_samples == 0:
        raise TooFewImages("the filtered set keeps no sample: loosen filtered_set thresholds")
    return shard_set


def grid_samples(shards_dir: Path, filtered_dir: Path, per_class: int,
                 image_shape: tuple[int, int, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first `per_class` synthetic, kept and rejected images of each class, for grids.

    Streams the filtered set's manifest (one record at a time) to pick them, then reads only
    the shards that hold a picked sample: memory and reading stay bounded by the grids, not by
    the set.
    """
    path = filtered_dir / FILTER_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: materialize 'filtered_set' first")
    picks: dict[str, list[tuple[str, str, int]]] = {"synthetic": [], "kept": [], "rejected": []}
    counts: dict[tuple[str, int], int] = {}
    with open(path) as handle:
        for line in handle:
            record = json.loads(line)
            for grid in ("synthetic", "kept" if record["keep"] else "rejected"):
                if counts.get((grid, record["label"]), 0) < per_class:
                    counts[(grid, record["label"])] = counts.get((grid, record["label"]), 0) + 1
                    picks[grid].append((record["shard"], record["key"], record["label"]))
    wanted = {key for chosen in picks.values() for _, key, _ in chosen}
    images: dict[str, np.ndarray] = {}
    for shard in sorted({shard for chosen in picks.values() for shard, _, _ in chosen}):
        for sample in read_samples([shards_dir / shard]):
            if sample.key in wanted:
                images[sample.key] = sample.image if sample.image.ndim == 3 else \
                    sample.image[:, :, None]
    empty = np.zeros((0, *image_shape), np.uint8)
    return {grid: (np.stack([images[key] for _, key, _ in chosen]) if chosen else empty,
                   np.asarray([label for _, _, label in chosen], dtype=np.int64))
            for grid, chosen in picks.items()}
