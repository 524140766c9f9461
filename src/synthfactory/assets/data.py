"""The inputs of the graph: the real images and the prompt records."""


import dagster as dg

from synthfactory.ops.data.prompts import (
    PROMPTS_FILE,
    expand_prompts,
    load_context_table,
    load_display_names,
    write_prompts,
)
from synthfactory.ops.data.real_images import list_classes
from synthfactory.ops.data.real_set import RealImagesSettings, split_real_images
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

REAL_IMAGES_DESCRIPTION = """\
The real dataset, split train/val/test (stratified, seeded) and written as WebDataset shards.

Source `digits` is scikit-learn's bundled 8×8 digits; `imagefolder` reads
`<root>/<class_name>/*` and `webdataset` reads existing shards (`cls`/`json` labels), at any
size and mode, resized to the configured resolution. With `test_root`, the user's own test
set is the test split. Validation (`val_fraction` of each class's train images) is carved
from train and held out of everything that learns: every choice reads it, and only
`eval_report` reads test. Unreadable files are skipped and counted. Exact copies (identical
pixels) stay on one side of every split, a copy of a `test_root` image is left out of
training, and copies under two classes are reported as label conflicts. With `few_shot: K`, K
seeded train images per class form the subset that the generator, the judge and the real
classifier learn from. Writes shards, `classes.json` and `manifest.json`."""


@dg.asset(group_name="data", kinds={"webdataset"}, code_version="2",
          description=REAL_IMAGES_DESCRIPTION)
def real_images(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                runtime: TorchRuntime) -> dg.MaterializeResult:
    config = params.real_images
    channels = config.effective_channels()
    settings = RealImagesSettings(
        source=config.source, root=config.root, test_root=config.test_root,
        class_names=config.class_names, resolution=config.resolution, channels=channels,
        test_fraction=config.test_fraction, val_fraction=config.val_fraction,
        shard_size=config.shard_size, few_shot=config.few_shot, seed=runtime.seed,
        train_needed=params.train_images_needed(),
        info={"source": config.source, "root": config.root, "resolution": config.resolution,
              "channels": channels, "test_fraction": config.test_fraction,
              "val_fraction": config.val_fraction, "seed": runtime.seed,
              "params_digest": params.digest("real_images")})
    split = split_real_images(settings, context.log.warning)
    with store.publish_dir("real_images") as directory:
        manifest = split.write(directory)
    sizes = {name: len(indices) for name, indices in split.splits.items()}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("real_images"))),
            "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"],
            "n_classes": split.n_classes,
            "skipped": dict(manifest["skipped"]),
            "converted": dict(manifest["converted"]),
            "duplicate_copies": manifest["duplicates"]["copies"],
            "label_conflicts": manifest["duplicates"]["label_conflicts"],
            "per_class": dg.MetadataValue.md(_counts_table(manifest["counts"])),
            "shards": len(manifest["shards"]),
            "n_few_shot": 0 if split.few_shot is None else len(split.few_shot),
        },
        data_version=dg.DataVersion(manifest["digest"][:16]),
    )


@dg.asset(group_name="data", kinds={"json"}, code_version="1")
def prompts(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
            runtime: TorchRuntime) -> dg.MaterializeResult:
    """One record per image to generate: class, template, text, negative text, seed, guidance.

    Classes are interleaved so that every shard of `synthetic_shards` is class-balanced; each
    record's seed derives from (global seed, index), so one image can be regenerated alone.
    """
    config = params.prompts
    source = params.real_images
    class_names = list_classes(source.source, source.root, source.class_names)
    records = expand_prompts(
        class_names, config.images_per_class, config.templates, config.guidance,
        config.negative_prompt, runtime.seed, strategy=config.strategy,
        context=load_context_table(config.context_table) if config.context_table else None,
        display_names=load_display_names(config.display_names) if config.display_names else None,
        guidance_range=config.guidance_range)
    with store.publish_file("prompts", PROMPTS_FILE) as temp:
        write_prompts(temp, records)
    digest = params.digest("prompts", "real_images")
    context.log.info(f"prompts: {len(records)} records for {len(class_names)} classes")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("prompts", PROMPTS_FILE))),
            "n_records": len(records), "n_classes": len(class_names),
            "example": records[0].text,
            "params_digest": digest,
        },
        data_version=dg.DataVersion(f"{digest}-{runtime.seed}"),
    )


def _counts_table(counts: dict[str, dict[str, int]]) -> str:
    """A markdown table of images per class and split."""
    splits = list(counts)
    rows = ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for name in next(iter(counts.values())):
        rows.append(f"| {name} | " + " | ".join(str(counts[s][name]) for s in splits) + " |")
    return "\n".join(rows)
