"""Adapting the pretrained generator to the user's images: the `generator_adapter` asset.

It is in the graph only with `generator.adapt: lora` (diffusers backend); `synthetic_shards`
and the refinement shards then depend on it and fuse its LoRA into the pipeline
(`ops.generation.generate.read_adapter`).
"""


import json

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.prompts import PROMPTS_FILE, read_prompts
from synthfactory.ops.data.real_images import read_classes, read_split, read_training_images
from synthfactory.ops.generation import GENERATOR_JSON
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore
from synthfactory.ops.generation.pretrained import check_unchanged

ADAPTER_ASSET = "generator_adapter"


@dg.asset(name=ADAPTER_ASSET, group_name="generation", kinds={"pytorch", "safetensors"},
          code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
          deps=["generator", "real_images", "prompts"])
def generator_adapter(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                      runtime: TorchRuntime) -> dg.MaterializeResult:
    """LoRA weights of the pretrained pipeline fine-tuned on the real train images (peft).

    The UNet's attention projections (and the text encoder's with `adapter.text_encoder`) learn
    to denoise the real train split (or its few-shot subset), each image captioned with one of
    its class's prompt texts, at the size the shards render at. Saved as
    `pytorch_lora_weights.safetensors` (what diffusers' `load_lora_weights` reads) with
    `adapter.json`: its sha256, the base generator's digest, the settings, the loss curve and
    the denoising loss on the held-out real validation images at fixed seeds before and after.
    Checkpoints under `.checkpoints/generator_adapter` make a killed run resume bit-identically.
    """
    # deferred: torch
    from synthfactory.ops.generation.adapter import (LoraSettings, StableDiffusionParts,
                                                     save_adapter, train_lora)
    # deferred: torch
    from synthfactory.ops.storage.checkpoint import remove_checkpoint

    config = params.generator
    record = json.loads((store.require("generator") / GENERATOR_JSON).read_text())
    path = check_unchanged(record, what="generator.model")
    real_dir = store.require("real_images")
    images, labels, _ = read_training_images(real_dir)
    val_images, val_labels, _ = read_split(real_dir, "val")
    names = read_classes(real_dir)
    records = read_prompts(store.require("prompts", PROMPTS_FILE))
    class_texts = [list(dict.fromkeys(r.text for r in records if r.class_id == c))
                   for c in range(len(names))]
    adapter = config.adapter
    settings = LoraSettings(rank=adapter.rank, steps=adapter.steps,
                            learning_rate=adapter.learning_rate, batch_size=adapter.batch_size,
                            text_encoder=adapter.text_encoder,
                            resolution=adapter.resolution or params.synthetic_shards.height,
                            checkpoint_every=adapter.checkpoint_every)
    parts = StableDiffusionParts(path, runtime.torch_device, runtime.torch_dtype)
    checkpoints = store.path(".checkpoints", ADAPTER_ASSET)
    result = train_lora(parts, images, labels, class_texts, settings, seed=runtime.seed,
                        base_digest=record["digest"], heldout=(val_images, val_labels),
                        checkpoint_dir=checkpoints, log=context.log.info)
    info = {"adapt": "lora", "base_digest": record["digest"], "base_path": record["path"],
            "settings": adapter.model_dump(), "scale": config.lora_scale,
            "n_images": len(images), "class_texts": class_texts, "seed": runtime.seed}
    with store.publish_dir(ADAPTER_ASSET) as directory:
        saved = save_adapter(directory, result, info)
    remove_checkpoint(checkpoints)
    heldout = result.heldout_loss
    context.log.info(f"generator_adapter: held-out denoising loss {heldout.get('before', 0):.4f}"
                     f" → {heldout.get('after', 0):.4f} on {len(val_labels)} validation images")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path(ADAPTER_ASSET))),
                  "digest": saved["digest"], "rank": adapter.rank, "steps": adapter.steps,
                  "trainable_parameters": result.trainable_parameters,
                  "resolution": result.resolution, "n_images": len(images),
                  "heldout_loss_before": round(heldout.get("before", float("nan")), 5),
                  "heldout_loss_after": round(heldout.get("after", float("nan")), 5),
                  "steps_per_second": round(result.steps_run / max(result.seconds, 1e-9), 3),
                  "loss_curve": dg.MetadataValue.json([[s, round(v, 5)]
                                                       for s, v in result.losses])},
        data_version=dg.DataVersion(saved["digest"][:16]))
