"""The inputs of the graph: the real images and the prompt records."""


import dagster as dg
import numpy as np

from synthfactory.ops.data.images import concatenate
from synthfactory.ops.data.preflight import (
    check_split_counts,
    class_size_warnings,
    counts_of,
    describe_source,
    minimum_images,
)
from synthfactory.ops.data.prompts import (
    PROMPTS_FILE,
    expand_prompts,
    load_context_table,
    load_display_names,
    write_prompts,
)
from synthfactory.ops.data.real_images import list_classes, load_real, write_real_images
from synthfactory.ops.data.splits import carve_validation, few_shot_subset, stratified_split
from synthfactory.params import Params
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


@dg.asset(group_name="data", kinds={"webdataset"}, code_version="1")
def real_images(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                runtime: TorchRuntime) -> dg.MaterializeResult:
    """The real dataset, split train/val/test (stratified, seeded) and written as WebDataset shards.

    Source `digits` is scikit-learn's bundled 8×8 digits; `imagefolder` reads
    `<root>/<class_name>/*` and `webdataset` reads existing shards (`cls`/`json` labels), at any
    size and mode, resized to the configured resolution. With `test_root`, the user's own test
    set is the test split. Validation (`val_fraction` of each class's train images) is carved
    from train and held out of everything that learns: every choice reads it, and only
    `eval_report` reads test. Unreadable files are skipped and counted. With `few_shot: K`, K
    seeded train images per class form the subset that the generator, the judge and the real
    classifier learn from. Writes shards, `classes.json` and `manifest.json`.
    """
    config = params.real_images
    channels = config.effective_channels()
    class_names = list_classes(config.source, config.root, config.class_names)
    dataset = load_real(config.source, config.root, config.resolution, channels, class_names)
    if config.test_root:
        # The user's own test set: every image of the root trains, every test_root image tests.
        n_train = len(dataset.labels)
        dataset = concatenate(dataset, load_real(config.source, config.test_root,
                                                 config.resolution, channels, class_names))
        train = np.arange(n_train)
        test = np.arange(n_train, len(dataset.labels))
    else:
        train, test = stratified_split(dataset.labels, config.test_fraction, runtime.seed)
    # Validation comes out of train: every choice reads it, nothing learns from it.
    train, val = carve_validation(dataset.labels, train, config.val_fraction, runtime.seed)
    # The CLI counted files before decoding; what decoded is checked again, before any training.
    split_sizes = counts_of(dataset.labels, {"train": train, "val": val, "test": test},
                            dataset.class_names)
    train_needed = params.train_images_needed()
    check_split_counts(split_sizes, describe_source(config.source, config.root, config.test_root),
                       minimum_images(config.test_fraction, config.val_fraction, runtime.seed,
                                      bool(config.test_root), train_needed), train_needed)
    for warning in class_size_warnings(split_sizes):
        context.log.warning(f"real_images: {warning}")
    for reason, count in dataset.skipped.items():
        context.log.warning(f"real_images: skipped {count} file(s): {reason}")
    for mode, count in dataset.converted.items():
        context.log.warning(f"real_images: converted {count} image(s) from mode {mode} to "
                            f"{'L' if channels == 1 else 'RGB'}")
    few_shot = (None if config.few_shot is None
                else few_shot_subset(dataset.labels, train, config.few_shot, runtime.seed))
    info = {"source": config.source, "root": config.root, "resolution": config.resolution,
            "channels": channels, "test_fraction": config.test_fraction,
            "val_fraction": config.val_fraction, "seed": runtime.seed,
            "params_digest": params.digest("real_images")}
    with store.publish_dir("real_images") as directory:
        manifest = write_real_images(directory, dataset,
                                     {"train": train, "val": val, "test": test},
                                     config.shard_size, info, few_shot)
    counts = manifest["counts"]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path("real_images"))),
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
            "n_classes": len(dataset.class_names),
            "skipped": dict(manifest["skipped"]),
            "converted": dict(manifest["converted"]),
            "per_class": dg.MetadataValue.md(_counts_table(counts)),
            "shards": len(manifest["shards"]),
            "n_few_shot": 0 if few_shot is None else len(few_shot),
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
