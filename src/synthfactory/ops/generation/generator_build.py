"""The `generator` made and published: the embedded class-conditional DDPM trained on the real
train split (or its few-shot subset), resuming from its checkpoints after a crash, or a
pretrained text-to-image pipeline described where it lies (not copied). Either way
`generator.json` records backend, source, revision, settings and a content digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synthfactory.ops.data.real_images import read_classes, read_split, read_training_images
from synthfactory.ops.generation import GENERATOR_JSON
from synthfactory.ops.generation.ddpm import save_generator, train_ddpm
from synthfactory.ops.generation.ddpm_stopping import (eval_cadence, recent_improvement,
                                                       training_budget)
from synthfactory.ops.generation.text2image import describe_pipeline
from synthfactory.ops.storage.artifacts import Artifacts, Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.checkpoint import remove_checkpoint

ASSET = "generator"


@dataclass(frozen=True)
class GeneratorSettings:
    """What the params fix of the generator (the `generator` section as plain values; `ddpm`:
    the DDPM's training settings)."""

    backend: str
    model: str | None
    revision: str | None
    variant: str | None
    local_files_only: bool
    lora: str | None
    lora_scale: float
    ddpm: dict[str, Any]


@dataclass
class BuiltGenerator:
    """`generator.json`'s data; for a trained DDPM also its parameter count and training log."""

    record: dict[str, Any]
    parameters: int = 0
    losses: list[tuple[int, float]] | None = None
    seconds: float = 0.0


def build_generator(store: Artifacts, settings: GeneratorSettings, seed: int, device: Any,
                    log: Log) -> BuiltGenerator:
    """Publish the generator of `settings.backend` (the DDPM trained on the store's real
    images, its checkpoints removed once it is published)."""
    if settings.backend == "diffusers":
        record = describe_pipeline(str(settings.model), revision=settings.revision,
                                   variant=settings.variant,
                                   local_files_only=settings.local_files_only,
                                   lora=settings.lora, lora_scale=settings.lora_scale)
        with store.publish_dir(ASSET) as directory:
            (directory / GENERATOR_JSON).write_text(dumps_json(record))
        log(f"generator: {record['pipeline_class']} from {record['path']}")
        return BuiltGenerator(record)
    real_dir = store.require("real_images")
    images, labels, _ = read_training_images(real_dir)
    # The held-out criterion reads the validation split (choices are made there; never test).
    val_images, val_labels, _ = read_split(real_dir, "val")
    class_names = read_classes(real_dir)
    ddpm = resolved_ddpm_settings(settings.ddpm, images.shape)
    # Checkpoints live beside the outputs, under a hidden name; a rerun after a crash resumes.
    checkpoints = store.path(".checkpoints", ASSET)
    unet, scheduler, trained = train_ddpm(
        images, labels, len(class_names), **ddpm, seed=seed, device=device, log=log,
        checkpoint_dir=checkpoints, val_images=val_images, val_labels=val_labels)
    info = {"backend": settings.backend, "source": "trained", "settings": ddpm,
            "n_classes": len(class_names), "classes": class_names,
            "image_shape": list(images.shape[1:]), "n_train": len(images), "seed": seed,
            "final_loss": trained.losses[-1][1], "train_seconds": round(trained.seconds, 2),
            "training": training_record(trained, ddpm)}
    with store.publish_dir(ASSET) as directory:
        record = save_generator(directory, unet, scheduler, info)
    remove_checkpoint(checkpoints)
    return BuiltGenerator(record, sum(p.numel() for p in unet.parameters()), trained.losses,
                          trained.seconds)


def resolved_ddpm_settings(ddpm: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """The DDPM's settings with the budget filled in from the data where the params leave it
    to the data (`train_steps` / `eval_every` null: ddpm_stopping.training_budget)."""
    ceiling, _ = training_budget(*shape)
    steps = ddpm["train_steps"] or ceiling
    return {**ddpm, "train_steps": steps, "eval_every": ddpm["eval_every"] or eval_cadence(steps)}


def training_record(trained: Any, ddpm: dict[str, Any]) -> dict[str, Any]:
    """generator.json's `training`: steps run against the ceiling, whether the held-out
    criterion stopped it (`converged`) or the ceiling did, the relative improvement over its
    last `patience` evaluations, and the held-out loss curve."""
    curve = [[step, round(loss, 6)] for step, loss in trained.validation]
    return {"steps": trained.steps, "ceiling": ddpm["train_steps"],
            "stopped_by": trained.stopped_by, "converged": trained.stopped_by == "criterion",
            "eval_every": ddpm["eval_every"], "patience": ddpm["patience"],
            "min_delta": ddpm["min_delta"],
            "recent_improvement": recent_improvement(trained.validation, ddpm["patience"]),
            "best_validation_loss": min((loss for _, loss in curve), default=None),
            "validation_curve": curve}
