"""The judge that scores synthetic images, made: the embedded ConvNet trained on the real train
split (or its few-shot subset), or a pretrained CLIP model resolved and its class texts
embedded; either way measured on the real validation split (never test), then written into a
directory (weights or class embeddings, and `judge.json`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.curation import JUDGE_JSON, JUDGE_WEIGHTS
from synthfactory.ops.curation.judges import ClipJudge, save_clip_judge
from synthfactory.ops.data.prompts import display_name, load_display_names
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.generation.pretrained import resolve_model
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.artifacts import Log
from synthfactory.ops.storage.atomic import dumps_json, sha256_file
from synthfactory.ops.training.classifiers import Placement
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.shardsets import real_shard_set
from synthfactory.ops.training.train import ClassifierSettings, save_classifier, train_classifier


@dataclass(frozen=True)
class JudgeSettings:
    """What the params fix of the judge (the `judge` section as plain values, the classifiers'
    `flip`, and the display names of `prompts.display_names` for CLIP's class texts)."""

    backend: str
    epochs: int
    width: int
    flip: bool
    model: str | None
    revision: str | None
    local_files_only: bool
    templates: list[str]
    batch_size: int
    display_names: str | None


@dataclass
class MadeJudge:
    """A judge made and measured, not written yet: `record` (judge.json's data; `write` adds
    the ConvNet's sha256), the line to log once it is published, and the trained ConvNet or
    CLIP's class embeddings."""

    record: dict[str, Any]
    line: str
    model: Any = None
    class_embeddings: np.ndarray | None = None

    def write(self, directory: Path) -> dict[str, Any]:
        """The judge's files into `directory`; judge.json's data."""
        if self.class_embeddings is not None:
            save_clip_judge(directory, self.record, self.class_embeddings)
            return self.record
        save_classifier(directory / JUDGE_WEIGHTS, self.model)
        self.record["sha256"] = sha256_file(directory / JUDGE_WEIGHTS)
        (directory / JUDGE_JSON).write_text(dumps_json(self.record))
        return self.record


def make_judge(real_dir: Path, settings: JudgeSettings, placement: Placement,
               log: Log) -> MadeJudge:
    """The judge of `settings.backend`, made from the real images of `real_dir` and measured
    on their validation split."""
    val_images, val_labels, _ = read_split(real_dir, "val")
    if settings.backend == "clip":
        return _clip_judge(real_dir, settings, placement, (val_images, val_labels))
    # Loaded when small, streamed from the shards when over runtime.in_memory_mb.
    real = real_shard_set(real_dir)
    seed = derive_seed(placement.seed, "judge")
    source = real.source(in_memory_mb=placement.in_memory_mb, seed=derive_seed(seed, "stream"),
                         workers=placement.workers, shuffle_buffer=placement.shuffle_buffer)
    n_classes = len(read_classes(real_dir))
    model, history = train_judge_convnet(source, None, n_classes, settings, seed=seed,
                                         device=placement.device, log=log)
    val_accuracy = float(np.mean(
        predict_proba(model, val_images, device=placement.device).argmax(1) == val_labels))
    return MadeJudge(
        {"kind": "convnet", "n_train": real.n_samples, "val_accuracy": val_accuracy,
         "history": history},
        f"judge: {val_accuracy:.4f} accuracy on {len(val_labels)} real validation images",
        model=model)


def train_judge_convnet(images: Any, labels: np.ndarray | None, n_classes: int,
                        settings: JudgeSettings, *, seed: int, device: Any,
                        log: Log | None = None) -> tuple[Any, dict[str, Any]]:
    """A ConvNet trained with the judge's recipe (`judge.epochs`, `judge.width`, the classifiers'
    `flip`, the rest `ClassifierSettings`' defaults) on uint8 images and labels, or on a source
    of batches (`labels` None): the judge, and the retrieval ranking's labelled-part ConvNet."""
    return train_classifier(images, labels, n_classes,
                            ClassifierSettings(epochs=settings.epochs, width=settings.width,
                                               flip=settings.flip),
                            seed=seed, device=device, log=log)


def _clip_judge(real_dir: Path, settings: JudgeSettings, placement: Placement,
                val: tuple[np.ndarray, np.ndarray]) -> MadeJudge:
    """The `clip` judge: resolve the model, embed the class prompts, measure zero-shot accuracy
    on the validation split."""
    val_images, val_labels = val
    source = resolve_model(str(settings.model), what="judge.model", revision=settings.revision,
                           local_files_only=settings.local_files_only)
    class_names = read_classes(real_dir)
    names = settings.display_names
    shown = [display_name(name, load_display_names(names) if names else None)
             for name in class_names]
    clip = ClipJudge(source.path, placement.device, settings.batch_size)
    class_embeddings = clip.class_text_embeddings(shown, settings.templates)
    clip.use_class_embeddings(class_embeddings)
    val_accuracy = float(np.mean(clip.predict_proba(val_images).argmax(1) == val_labels))
    record = {"kind": "clip", **source.record(), "templates": settings.templates,
              "class_texts": shown, "val_accuracy": val_accuracy}
    return MadeJudge(record, f"judge: CLIP zero-shot {val_accuracy:.4f} on {len(val_labels)} "
                     "real validation images", class_embeddings=class_embeddings)
