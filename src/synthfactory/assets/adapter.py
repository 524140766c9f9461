"""Adapting the pretrained generator to the user's images: the `generator_adapter` asset.

It is in the graph only with `generator.adapt: lora` (diffusers backend); `synthetic_shards`
and the refinement shards then depend on it and fuse its LoRA into the pipeline
(`ops.generation.generate.read_adapter`).
"""


import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

ADAPTER_ASSET = "generator_adapter"
DESCRIPTION = """\
LoRA weights of the pretrained pipeline fine-tuned on the real train images (peft).

The UNet's attention projections (and the text encoder's with `adapter.text_encoder`) learn
to denoise the real train split (or its few-shot subset), each image captioned with one of
its class's prompt texts, at the size the shards render at. Saved as
`pytorch_lora_weights.safetensors` (what diffusers' `load_lora_weights` reads) with
`adapter.json`: its sha256, the base generator's digest, the settings, the loss curve and
the denoising loss on the held-out real validation images at fixed seeds before and after.
Checkpoints under `.checkpoints/generator_adapter` make a killed run resume bit-identically."""


@dg.asset(name=ADAPTER_ASSET, group_name="generation", kinds={"pytorch", "safetensors"},
          code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
          deps=["generator", "real_images", "prompts"], description=DESCRIPTION)
def generator_adapter(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                      runtime: TorchRuntime) -> dg.MaterializeResult:
    # deferred: torch and diffusers
    from synthfactory.ops.generation.adapter import LoraSettings
    from synthfactory.ops.generation.adapter_build import build_adapter  # deferred: torch

    config = params.generator
    adapter = config.adapter
    settings = LoraSettings(rank=adapter.rank, steps=adapter.steps,
                            learning_rate=adapter.learning_rate, batch_size=adapter.batch_size,
                            text_encoder=adapter.text_encoder,
                            resolution=adapter.resolution or params.synthetic_shards.height,
                            checkpoint_every=adapter.checkpoint_every)
    built = build_adapter(store, settings,
                          {"settings": adapter.model_dump(), "scale": config.lora_scale},
                          seed=runtime.seed, device=runtime.torch_device,
                          dtype=runtime.torch_dtype, log=context.log.info)
    result, heldout = built.result, built.result.heldout_loss
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(store.path(ADAPTER_ASSET))),
                  "digest": built.saved["digest"], "rank": adapter.rank, "steps": adapter.steps,
                  "trainable_parameters": result.trainable_parameters,
                  "resolution": result.resolution, "n_images": built.n_images,
                  "heldout_loss_before": round(heldout.get("before", float("nan")), 5),
                  "heldout_loss_after": round(heldout.get("after", float("nan")), 5),
                  "steps_per_second": round(result.steps_run / max(result.seconds, 1e-9), 3),
                  "loss_curve": dg.MetadataValue.json([[s, round(v, 5)]
                                                       for s, v in result.losses])},
        data_version=dg.DataVersion(built.saved["digest"][:16]))
