"""The generative half of the graph: the diffusion model and the shards it writes."""


import time
import warnings
from collections import Counter
from typing import Any

import dagster as dg

from synthfactory.assets.metadata import shard_preview
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.prompts import PROMPTS_FILE, read_prompts, shard_slice
from synthfactory.ops.data.real_images import read_classes, read_image_shape, read_training_images
from synthfactory.ops.generation import GENERATOR_JSON
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import read_shard_info, shard_is_current, write_shard
from synthfactory.params import Params, config_digest
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


@dg.asset(group_name="generation", kinds={"pytorch", "diffusers"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images"])
def generator(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
              runtime: TorchRuntime) -> dg.MaterializeResult:
    """A diffusion model directory in diffusers format (safetensors) with `generator.json`.

    Backend `ddpm` (the embedded default) trains a small class-conditional DDPM — a diffusers
    `UNet2DModel` with a class embedding and classifier-free-guidance dropout — on the real
    train split (or its few-shot subset). Backend `diffusers` resolves a pretrained
    text-to-image pipeline from a local directory or a hub id (safetensors only; a hub id
    resolves to its cached snapshot) without copying it. Either way `generator.json` records
    backend, source, revision, settings and a content digest of the weights.
    """
    config = params.generator
    if config.backend == "diffusers":
        from synthfactory.ops.generation.text2image import describe_pipeline

        record = describe_pipeline(str(config.model), revision=config.revision,
                                   variant=config.variant, local_files_only=config.local_files_only,
                                   lora=config.lora, lora_scale=config.lora_scale)
        with store.publish_dir("generator") as directory:
            (directory / GENERATOR_JSON).write_text(dumps_json(record))
        context.log.info(f"generator: {record['pipeline_class']} from {record['path']}")
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(record["path"]), "backend": config.backend,
                      "source": config.model, "revision": str(record["revision"]),
                      "pipeline_class": record["pipeline_class"], "digest": record["digest"],
                      "size_mb": round(sum(record["files"].values()) / 2**20, 1),
                      "lora": str(record["lora"]["path"]) if record["lora"] else "none"},
            data_version=dg.DataVersion(record["digest"][:16]))

    from synthfactory.ops.generation.ddpm import save_generator, train_ddpm  # torch: imported per step
    from synthfactory.ops.storage.checkpoint import remove_checkpoint

    real_dir = store.require("real_images")
    images, labels, _ = read_training_images(real_dir)
    class_names = read_classes(real_dir)
    # Checkpoints live beside the outputs, under a hidden name; a rerun after a crash resumes.
    checkpoints = store.path(".checkpoints", "generator")
    unet, scheduler, log = train_ddpm(
        images, labels, len(class_names), **config.ddpm.model_dump(), seed=runtime.seed,
        device=runtime.torch_device, log=context.log.info, checkpoint_dir=checkpoints)
    info = {"backend": config.backend, "source": "trained", "settings": config.ddpm.model_dump(),
            "n_classes": len(class_names), "classes": class_names,
            "image_shape": list(images.shape[1:]), "n_train": len(images), "seed": runtime.seed,
            "final_loss": log.losses[-1][1], "train_seconds": round(log.seconds, 2)}
    with store.publish_dir("generator") as directory:
        record = save_generator(directory, unet, scheduler, info)
    remove_checkpoint(checkpoints)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("generator"))),
            "digest": record["digest"], "backend": config.backend,
            "parameters": sum(p.numel() for p in unet.parameters()),
            "train_seconds": round(log.seconds, 1), "final_loss": round(log.losses[-1][1], 4),
            "loss_curve": dg.MetadataValue.json([[s, round(v, 4)] for s, v in log.losses]),
        },
        data_version=dg.DataVersion(record["digest"][:16]),
    )


def open_configured_generator(params: Params, store: ArtifactStore,
                              runtime: TorchRuntime) -> tuple[Any, Any]:
    """The trained or pretrained generator as params configure it (with generator.adapt: lora,
    the LoRA fine-tuned on the real images fused in) and the sampler settings of
    `synthetic_shards`; every asset that generates images opens it here."""
    from synthfactory.ops.generation.generate import open_generator, read_adapter
    from synthfactory.ops.generation.samplers import SamplerSettings

    lora = (read_adapter(store.require("generator_adapter"))
            if params.generator.adapt == "lora" else None)
    model = open_generator(store.require("generator"), backend=params.generator.backend,
                           device=runtime.torch_device, dtype=runtime.torch_dtype,
                           compile_model=params.generator.compile, lora=lora)
    config = params.synthetic_shards
    return model, SamplerSettings(steps=config.steps, scheduler=config.scheduler,
                                  height=config.height, width=config.width)


def build_synthetic_shards(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The `synthetic_shards` asset over the shard partitions implied by the params."""
    # BackfillPolicy is marked beta, but it is how a partition-range backfill runs as one step
    # that loads the model once; the warning would print on every load of the code location.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _synthetic_shards_asset(partitions)


def _synthetic_shards_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="synthetic_shards", group_name="generation", kinds={"diffusers", "webdataset"},
              code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["prompts", "generator", "real_images"],
              partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def synthetic_shards(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                         runtime: TorchRuntime) -> dg.MaterializeResult:
        """Generated images, one WebDataset tar per partition (`00000`, `00001`, …).

        Each sample is `<key>.png`, `<key>.json` (the prompt record, sampler settings, generator
        digest) and `<key>.cls`. NaN or black images are regenerated with a derived seed or
        dropped (`bad_images`), counted in each sidecar and in the metadata. Images are stored
        at the real images' resolution and channels (resized like them when the model renders
        another size). A run over a
        partition range loads the generator once and writes each shard atomically (tar renamed
        into place, its sidecar written last), so the same params give byte-identical shards.
        """
        from synthfactory.ops.generation.generate import generate_samples  # torch: per step

        config = params.synthetic_shards
        records = read_prompts(store.require("prompts", PROMPTS_FILE))
        image_shape = read_image_shape(store.require("real_images"))
        model, settings = open_configured_generator(params, store, runtime)
        written, started = [], time.perf_counter()
        problems: Counter[str] = Counter()
        for key in store.leased("synthetic_shards", context.partition_keys):  # one writer
            batch = shard_slice(records, key, config.shard_size)
            shard_started = time.perf_counter()
            tar_path = store.path("synthetic_shards", f"shard-{key}.tar")
            # The records carry the seeds: with the generator digest and the stored shape they
            # fix the shard's bytes.
            extra = {"generator_digest": model.digest,
                     "params_digest": params.digest("prompts", "synthetic_shards"),
                     "records_digest": config_digest([r.to_json() for r in batch]),
                     "image_shape": list(image_shape)}
            if shard_is_current(tar_path, extra):  # finished before a crash: same bytes again
                info = read_shard_info(tar_path)
                context.log.info(f"shard {key}: already finished from the same inputs, kept")
                written.append({"shard": key, "count": info.count, "sha256": info.sha256,
                                "seconds": 0.0, "reused": True})
                # With an object-store root: a crash may have come before the upload.
                store.push("synthetic_shards", tar_path.name)
                store.push("synthetic_shards", f"shard-{key}.json")
                continue
            # Other machines must not pair the old sidecar with the new tar while it uploads.
            store.retract("synthetic_shards", f"shard-{key}.json")
            shard_problems: Counter[str] = Counter()
            info = write_shard(
                tar_path,
                generate_samples(model, batch, batch_size=config.batch_size, settings=settings,
                                 bad_images=config.bad_images, max_attempts=config.max_attempts,
                                 counts=shard_problems, image_shape=image_shape),
                # The counter fills while the samples are written; the sidecar is written after.
                extra={**extra, "bad_images": shard_problems})
            # With an object-store root: the tar, then its sidecar (what marks it finished).
            store.push("synthetic_shards", tar_path.name)
            store.push("synthetic_shards", f"shard-{key}.json")
            seconds = time.perf_counter() - shard_started
            context.log.info(f"shard {key}: {info.count} images in {seconds:.1f}s "
                             f"({info.count / seconds:.1f} images/s)")
            if shard_problems:
                context.log.warning(f"shard {key}: bad generated images {dict(shard_problems)}")
            problems.update(shard_problems)
            written.append({"shard": key, "count": info.count, "sha256": info.sha256,
                            "seconds": round(seconds, 2), "reused": False})
        seconds = time.perf_counter() - started
        n_images = sum(shard["count"] for shard in written)
        metadata: dict[str, object] = {
            "path": dg.MetadataValue.path(str(store.path("synthetic_shards"))),
            "shards": dg.MetadataValue.json(written),
            "n_images": n_images, "seconds": round(seconds, 2),
            "images_per_second": round(n_images / seconds, 2),
            "generator_digest": model.digest,
            "bad_images": dg.MetadataValue.json(dict(sorted(problems.items()))),
            "prompts_path": dg.MetadataValue.path(str(store.path("prompts", PROMPTS_FILE))),
            "generator_path": dg.MetadataValue.path(str(store.path("generator"))),
            **shard_preview([store.path("synthetic_shards", f"shard-{shard['shard']}.tar")
                             for shard in written],
                            [name for _, name in sorted({(r.class_id, r.class_name)
                                                         for r in records})]),
        }
        # A data version names one partition's bytes; a multi-shard run reports digests instead.
        version = dg.DataVersion(written[0]["sha256"][:16]) if len(written) == 1 else None
        return dg.MaterializeResult(metadata=metadata, data_version=version)

    return synthetic_shards
