"""The generative half of the graph: the diffusion model and the shards it writes."""


import time
import warnings

import dagster as dg

from synthfactory.ops.prompts import PROMPTS_FILE, read_prompts, shard_slice
from synthfactory.ops.real_data import read_classes, read_training_images
from synthfactory.ops.shards import write_shard
from synthfactory.assets.metadata import shard_preview
from synthfactory.executors import GPU_OP_TAGS
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


@dg.asset(group_name="generation", kinds={"pytorch", "diffusers"}, code_version="1", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images"])
def generator(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
              runtime: TorchRuntime) -> dg.MaterializeResult:
    """A diffusion model directory in diffusers format (safetensors) with `generator.json`.

    Backend `ddpm` (the embedded default) trains a small class-conditional DDPM — a diffusers
    `UNet2DModel` with a class embedding and classifier-free-guidance dropout — on the real
    train split (or its few-shot subset); `generator.json` records backend, settings and a
    content digest of the weights.
    """
    from synthfactory.ops.ddpm import save_generator, train_ddpm  # torch: imported per step

    config = params.generator
    real_dir = store.require("real_images")
    images, labels, _ = read_training_images(real_dir)
    class_names = read_classes(real_dir)
    unet, scheduler, log = train_ddpm(
        images, labels, len(class_names), **config.ddpm.model_dump(), seed=runtime.seed,
        device=runtime.torch_device, log=context.log.info)
    info = {"backend": config.backend, "source": "trained", "settings": config.ddpm.model_dump(),
            "n_classes": len(class_names), "classes": class_names,
            "image_shape": list(images.shape[1:]), "n_train": len(images), "seed": runtime.seed,
            "final_loss": log.losses[-1][1], "train_seconds": round(log.seconds, 2)}
    with store.publish_dir("generator") as directory:
        record = save_generator(directory, unet, scheduler, info)
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


def build_synthetic_shards(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The `synthetic_shards` asset over the shard partitions implied by the params."""
    # BackfillPolicy is marked beta, but it is how a partition-range backfill runs as one step
    # that loads the model once; the warning would print on every load of the code location.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _synthetic_shards_asset(partitions)


def _synthetic_shards_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name="synthetic_shards", group_name="generation", kinds={"diffusers", "webdataset"},
              code_version="1", pool="gpu", op_tags=GPU_OP_TAGS, deps=["prompts", "generator"],
              partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def synthetic_shards(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                         runtime: TorchRuntime) -> dg.MaterializeResult:
        """Generated images, one WebDataset tar per partition (`00000`, `00001`, …).

        Each sample is `<key>.png`, `<key>.json` (the prompt record, sampler settings, generator
        digest) and `<key>.cls`. A run over a partition range loads the generator once and writes
        each shard atomically (tar renamed into place, its sidecar written last), so the same
        params give byte-identical shards.
        """
        from synthfactory.ops.ddpm import DdpmGenerator  # torch: imported per step
        from synthfactory.ops.generate import generate_samples

        config = params.synthetic_shards
        records = read_prompts(store.require("prompts", PROMPTS_FILE))
        model = DdpmGenerator(store.require("generator"), runtime.torch_device,
                              runtime.torch_dtype)
        written, started = [], time.perf_counter()
        for key in context.partition_keys:
            batch = shard_slice(records, key, config.shard_size)
            shard_started = time.perf_counter()
            # Other machines must not pair the old sidecar with the new tar while it uploads.
            store.retract("synthetic_shards", f"shard-{key}.json")
            info = write_shard(
                store.path("synthetic_shards", f"shard-{key}.tar"),
                generate_samples(model, batch, batch_size=config.batch_size, steps=config.steps,
                                 scheduler=config.scheduler),
                extra={"generator_digest": model.digest,
                       "params_digest": params.digest("prompts", "synthetic_shards")})
            # With an object-store root: the tar, then its sidecar (what marks it finished).
            store.push("synthetic_shards", f"shard-{key}.tar")
            store.push("synthetic_shards", f"shard-{key}.json")
            seconds = time.perf_counter() - shard_started
            context.log.info(f"shard {key}: {info.count} images in {seconds:.1f}s "
                             f"({info.count / seconds:.1f} images/s)")
            written.append({"shard": key, "count": info.count, "sha256": info.sha256,
                            "seconds": round(seconds, 2)})
        seconds = time.perf_counter() - started
        n_images = sum(shard["count"] for shard in written)
        metadata: dict[str, object] = {
            "path": dg.MetadataValue.path(str(store.path("synthetic_shards"))),
            "shards": dg.MetadataValue.json(written),
            "n_images": n_images, "seconds": round(seconds, 2),
            "images_per_second": round(n_images / seconds, 2),
            "generator_digest": model.digest,
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
