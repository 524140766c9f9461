"""The `generator_adapter` made and published: LoRA weights of the pretrained pipeline
fine-tuned on the real train images (or the few-shot subset), each captioned with one of its
class's prompt texts, measured on the held-out real validation images; its checkpoints make a
killed run resume bit-identically and are removed once the adapter is published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from synthfactory.ops.data.prompts import PROMPTS_FILE, read_prompts
from synthfactory.ops.data.real_images import read_classes, read_split, read_training_images
from synthfactory.ops.generation import GENERATOR_JSON
from synthfactory.ops.generation.adapter import (AdapterResult, LoraSettings,
                                                 StableDiffusionParts, save_adapter, train_lora)
from synthfactory.ops.generation.pretrained import check_unchanged
from synthfactory.ops.storage.artifacts import Artifacts, Log
from synthfactory.ops.storage.checkpoint import remove_checkpoint

ASSET = "generator_adapter"


@dataclass
class BuiltAdapter:
    """The training's result, `adapter.json`'s data, and the images it learned from."""

    result: AdapterResult
    saved: dict[str, Any]
    n_images: int


def build_adapter(store: Artifacts, settings: LoraSettings, record: dict[str, Any], *,
                  seed: int, device: Any, dtype: Any, log: Log) -> BuiltAdapter:
    """Fine-tune and publish the LoRA of the store's generator. `record` is what adapter.json
    records of the params (`settings`: the adapter section as configured, `scale`)."""
    base = json.loads((store.require("generator") / GENERATOR_JSON).read_text())
    path = check_unchanged(base, what="generator.model")
    real_dir = store.require("real_images")
    images, labels, _ = read_training_images(real_dir)
    val_images, val_labels, _ = read_split(real_dir, "val")
    names = read_classes(real_dir)
    records = read_prompts(store.require("prompts", PROMPTS_FILE))
    class_texts = [list(dict.fromkeys(r.text for r in records if r.class_id == c))
                   for c in range(len(names))]
    parts = StableDiffusionParts(path, device, dtype)
    checkpoints = store.path(".checkpoints", ASSET)
    result = train_lora(parts, images, labels, class_texts, settings, seed=seed,
                        base_digest=base["digest"], heldout=(val_images, val_labels),
                        checkpoint_dir=checkpoints, log=log)
    info = {"adapt": "lora", "base_digest": base["digest"], "base_path": base["path"],
            "settings": record["settings"], "scale": record["scale"],
            "n_images": len(images), "class_texts": class_texts, "seed": seed}
    with store.publish_dir(ASSET) as directory:
        saved = save_adapter(directory, result, info)
    remove_checkpoint(checkpoints)
    heldout = result.heldout_loss
    log(f"generator_adapter: held-out denoising loss {heldout.get('before', 0):.4f}"
        f" → {heldout.get('after', 0):.4f} on {len(val_labels)} validation images")
    return BuiltAdapter(result, saved, len(images))
