"""The generative half of the graph: the diffusion model and the shards it writes."""


import time
import warnings
from collections import Counter
from typing import Any

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.prompts import PROMPTS_FILE, read_prompts, shard_slice
from synthfactory.ops.data.real_images import read_image_shape
from synthfactory.params import Params, config_digest
from synthfactory.publishing import open_configured_generator, path_md, shard_preview
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


GENERATOR_DESCRIPTION = """\
A diffusion model directory in diffusers format (safetensors) with `generator.json`.

Backend `ddpm` (the embedded default) trains a small class-conditional DDPM — a diffusers
`UNet2DModel` with a class embedding and classifier-free-guidance dropout — on the real
train split (or its few-shot subset). Backend `diffusers` resolves a pretrained
text-to-image pipeline from a local directory or a hub id (safetensors only; a hub id
resolves to its cached snapshot) without copying it. Either way `generator.json` records
backend, source, revision, settings and a content digest of the weights."""


@dg.asset(group_name="generation", kinds={"pytorch", "diffusers"}, code_version="2", pool="gpu",
          op_tags=GPU_OP_TAGS, deps=["real_images"], description=GENERATOR_DESCRIPTION)
def generator(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
              runtime: TorchRuntime) -> dg.MaterializeResult:
    # deferred: torch and diffusers
    from synthfactory.ops.generation.generator_build import GeneratorSettings, build_generator

    config = params.generator
    built = build_generator(store, GeneratorSettings(
        backend=config.backend, model=config.model, revision=config.revision,
        variant=config.variant, local_files_only=config.local_files_only, lora=config.lora,
        lora_scale=config.lora_scale, ddpm=config.ddpm.model_dump()), runtime.seed,
        runtime.torch_device, context.log.info)
    record = built.record
    if config.backend == "diffusers":
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(record["path"]), "backend": config.backend,
                      "source": config.model, "revision": str(record["revision"]),
                      "pipeline_class": record["pipeline_class"], "digest": record["digest"],
                      "size_mb": round(sum(record["files"].values()) / 2**20, 1),
                      "lora": str(record["lora"]["path"]) if record["lora"] else "none"},
            data_version=dg.DataVersion(record["digest"][:16]))
    losses = built.losses or []
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("generator"))),
            "digest": record["digest"], "backend": config.backend,
            "parameters": built.parameters,
            "train_seconds": round(built.seconds, 1), "final_loss": round(losses[-1][1], 4),
            "loss_curve": dg.MetadataValue.json([[s, round(v, 4)] for s, v in losses]),
            **_training_metadata(record.get("training") or {}),
        },
        data_version=dg.DataVersion(record["digest"][:16]),
    )


def _training_metadata(training: dict[str, Any]) -> dict[str, Any]:
    """How long the DDPM trained and why it stopped: steps against the ceiling, converged (the
    held-out criterion stopped it) or not, and the held-out loss curve."""
    if not training:
        return {}
    return {"steps": training["steps"], "ceiling": training["ceiling"],
            "stopped_by": training["stopped_by"], "converged": training["converged"],
            "validation_curve": dg.MetadataValue.json(training["validation_curve"])}


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
        from synthfactory.ops.generation.shard_writing import write_generated_shard  # deferred: torch

        records = read_prompts(store.require("prompts", PROMPTS_FILE))
        image_shape = read_image_shape(store.require("real_images"))
        model, settings = open_configured_generator(params, store, runtime)
        written, started, problems = [], time.perf_counter(), Counter[str]()
        for key in store.leased("synthetic_shards", context.partition_keys):  # one writer
            batch = shard_slice(records, key, params.synthetic_shards.shard_size)
            # The records carry the seeds: with the generator digest and the stored shape they
            # fix the shard's bytes.
            extra = {"generator_digest": model.digest,
                     "params_digest": params.digest("prompts", "synthetic_shards"),
                     "records_digest": config_digest([r.to_json() for r in batch]),
                     "image_shape": list(image_shape)}
            shard = write_generated_shard(store, "synthetic_shards", f"shard-{key}", model, batch,
                                          extra, params.synthetic_shards, settings, image_shape,
                                          count_bad_images=True)
            _log_shard(context, key, shard)
            problems.update(shard.problems)
            written.append({"shard": key, "count": shard.info.count, "sha256": shard.info.sha256,
                            "seconds": round(shard.seconds, 2), "reused": shard.reused})
        # A data version names one partition's bytes; a multi-shard run reports digests instead.
        return dg.MaterializeResult(
            metadata=_shards_metadata(store, written, time.perf_counter() - started, problems,
                                      model.digest, records),
            data_version=dg.DataVersion(written[0]["sha256"][:16]) if len(written) == 1 else None)

    return synthetic_shards


def _log_shard(context: dg.AssetExecutionContext, key: str, shard: Any) -> None:
    """One shard's line: kept, or written at what speed, and its bad images."""
    if shard.reused:
        context.log.info(f"shard {key}: already finished from the same inputs, kept")
        return
    count, seconds = shard.info.count, shard.seconds
    context.log.info(f"shard {key}: {count} images in {seconds:.1f}s "
                     f"({count / seconds:.1f} images/s)")
    if shard.problems:
        context.log.warning(f"shard {key}: bad generated images {dict(shard.problems)}")


def _shards_metadata(store: ArtifactStore, written: list[dict[str, Any]], seconds: float,
                     problems: Counter[str], digest: str, records: list[Any]) -> dict[str, Any]:
    """What a run of shards shows: each shard, speed, bad images, a preview of the shards."""
    n_images = sum(shard["count"] for shard in written)
    return {
        "path": path_md(store, "synthetic_shards"),
        "shards": dg.MetadataValue.json(written),
        "n_images": n_images, "seconds": round(seconds, 2),
        "images_per_second": round(n_images / seconds, 2),
        "generator_digest": digest,
        "bad_images": dg.MetadataValue.json(dict(sorted(problems.items()))),
        "prompts_path": path_md(store, "prompts", PROMPTS_FILE),
        "generator_path": path_md(store, "generator"),
        **shard_preview([store.path("synthetic_shards", f"shard-{shard['shard']}.tar")
                         for shard in written],
                        [name for _, name in sorted({(r.class_id, r.class_name)
                                                     for r in records})]),
    }
