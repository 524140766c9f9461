"""The closed loop: weak-class refinement rounds and their equal-budget control.

Round r is four assets: `refinement_plan`, `refined_shards`, `classifier_refined` and
`classifier_uniform` (round 1 has these names; round r > 1 adds `_round<r>`). Dagster's asset
graph cannot hold a cycle between assets, so the rounds are unrolled: round r's plan depends on
round r-1's `classifier_refined`, and the graph itself says in which order rounds run (one
`synthfactory run` runs them all; the UI shows each round's plan and results as assets of
their own). `refinement.rounds` fixes how many exist when the code location loads, as the
shard count does; raising it adds rounds without renaming the earlier ones.

They sit between the classifiers and `eval_report`, not after it: the plan reads *validation*
results only (it evaluates the classifiers on the val split itself), `metrics.json` has one
writer (`eval_report`, which adds `arms.refined`, `arms.uniform` and `refinement`), and DVC
forbids two stages owning one output.
"""


import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.prompts import (PROMPTS_FILE, display_name, load_display_names,
                                           read_prompts, write_prompts)
from synthfactory.ops.data.real_images import read_classes, read_image_shape, read_split
from synthfactory.ops.evaluation.arms import HISTORY_JSON, TrainingData, synthetic_arm
from synthfactory.ops.refinement.plan import (PLAN_JSON, REFINED, UNIFORM, ClassRecipe,
                                              PlanSettings, base_recipes, class_evidence,
                                              make_plan, partition_slice, refined_records,
                                              uniform_records)
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import read_shard_info, shard_is_current, write_shard
from synthfactory.params import (ClassifiersParams, Params, ProjectConfig, RefinementParams,
                                 config_digest)
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

if TYPE_CHECKING:  # torch is imported by the steps, not when the code location loads
    import torch

RECORDS = {REFINED: "refined.jsonl", UNIFORM: "uniform.jsonl"}


def round_name(asset: str, round_index: int) -> str:
    """The asset name of one round: the plain name for round 1, `<name>_round<r>` after."""
    return asset if round_index == 1 else f"{asset}_round{round_index}"


def refinement_assets(config: ProjectConfig,
                      partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """Every round's four assets (none when `refinement.rounds` is 0)."""
    assets = []
    for round_index in range(1, config.params.refinement.rounds + 1):
        adapted = config.params.generator.adapt == "lora"
        with warnings.catch_warnings():  # BackfillPolicy is beta (see generation.py)
            warnings.simplefilter("ignore", dg.BetaWarning)
            assets += [_plan_asset(round_index), _shards_asset(round_index, partitions, adapted),
                       _classifier_asset(round_index, REFINED), _classifier_asset(round_index,
                                                                                  UNIFORM)]
    return assets


def _plan_asset(round_index: int) -> dg.AssetsDefinition:
    evaluated = "classifier_synthetic" if round_index == 1 else round_name("classifier_refined",
                                                                            round_index - 1)
    previous = [] if round_index == 1 else [round_name("refinement_plan", round_index - 1)]

    @dg.asset(name=round_name("refinement_plan", round_index), group_name="refinement",
              kinds={"json"}, code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=[evaluated, "classifier_real", "real_images", "filtered_set", "prompts",
                    *previous])
    def refinement_plan(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                        runtime: TorchRuntime) -> dg.MaterializeResult:
        """Which classes get how many of the round's extra images, with which recipe, and why.

        Reads validation results only: the evaluated arm's (the synthetic arm in round 1, the
        previous round's refined arm after) and the real arm's per-class accuracy on the val
        split, the confusion pairs, and the filter's per-class pass rates. Writes `plan.json`
        (per class: evidence, images, recipe changes, reason) and the prompt records of the
        refined arm (`refined.jsonl`) and of the equal-budget uniform control (`uniform.jsonl`).
        """
        from synthfactory.ops.refinement.arms import evaluate_classifiers

        config = params.refinement
        real_dir = store.require("real_images")
        names = read_classes(real_dir)
        val_images, val_labels, _ = read_split(real_dir, "val")
        arm = evaluate_classifiers(store.require(evaluated), val_images, val_labels, len(names),
                                   runtime.torch_device)
        real = evaluate_classifiers(store.require("classifier_real"), val_images, val_labels,
                                    len(names), runtime.torch_device)
        summary = json.loads((store.require("filtered_set") / SUMMARY_JSON).read_text())
        pass_rates = {name: row["pass_rate"] for name, row in summary["per_class"].items()}
        evidence = class_evidence(names, arm["per_class_accuracy"], real["per_class_accuracy"],
                                  arm["confusion"], pass_rates)
        base_records = read_prompts(store.require("prompts", PROMPTS_FILE))
        base = base_recipes(base_records, len(names))
        current = base if not previous else _recipes_of(store.require(previous[0]) / PLAN_JSON)
        settings = PlanSettings(
            budget=config.budget, recipes=tuple(config.recipes), min_gap=config.min_gap,
            pass_rate_high=config.pass_rate_high, pass_rate_low=config.pass_rate_low,
            confusion_share=config.confusion_share, guidance_factor=config.guidance_factor,
            min_guidance=config.min_guidance, diversity_levels=config.diversity_levels,
            templates=tuple(config.templates),
            text_backend=params.generator.backend == "diffusers")
        plans = make_plan(evidence, settings, current, base)
        table = params.prompts.display_names
        shown = [display_name(n, load_display_names(table) if table else None) for n in names]
        records = {REFINED: refined_records(plans, base_records, shown, round_index=round_index,
                                            seed=runtime.seed),
                   UNIFORM: uniform_records(base_records, len(names), config.budget,
                                            round_index=round_index, seed=runtime.seed)}
        plan = {"round": round_index, "evaluated_arm": evaluated, "split": "val",
                "n_val": len(val_labels), "budget": config.budget,
                "val_accuracy": {"evaluated": arm["accuracy_mean"], "real": real["accuracy_mean"]},
                "classes": [p.to_json() for p in plans]}
        name = round_name("refinement_plan", round_index)
        with store.publish_dir(name) as directory:
            (directory / PLAN_JSON).write_text(dumps_json(plan))
            for arm_name, arm_records in records.items():
                write_prompts(directory / RECORDS[arm_name], arm_records)
        for p in plans:
            if p.images:
                context.log.info(f"{name}: class {p.name}: {p.images} images, {p.changes}")
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path(name))),
            "evaluated_arm": evaluated, "val_accuracy": round(arm["accuracy_mean"], 4),
            "real_val_accuracy": round(real["accuracy_mean"], 4),
            "plan": dg.MetadataValue.md(_plan_table(plans)),
        })

    return refinement_plan


def _recipes_of(plan_path: Path) -> dict[int, ClassRecipe]:
    """The recipe each class had in a plan (the next round starts from it)."""
    classes = json.loads(plan_path.read_text())["classes"]
    return {c["class_id"]: ClassRecipe(guidance=tuple(c["recipe"]["guidance"]),
                                       templates=tuple(c["recipe"]["templates"]),
                                       negative_class=c["recipe"]["negative_class"])
            for c in classes}


def _plan_table(plans: list) -> str:
    rows = ["| class | val acc | real val acc | pass rate | images | changes |",
            "|---|---:|---:|---:|---:|---|"]
    for p in plans:
        rate = p.evidence["pass_rate"]
        rows.append(f"| {p.name} | {p.evidence['val_accuracy']:.3f} | "
                    f"{p.evidence['real_val_accuracy']:.3f} | "
                    f"{'-' if rate is None else f'{rate:.2f}'} | {p.images} | "
                    f"{', '.join(p.changes) or '-'} |")
    return "\n".join(rows)


def _shards_asset(round_index: int, partitions: dg.PartitionsDefinition,
                  adapted: bool) -> dg.AssetsDefinition:
    plan_name = round_name("refinement_plan", round_index)
    name = round_name("refined_shards", round_index)

    @dg.asset(name=name, group_name="refinement", kinds={"diffusers", "webdataset"},
              code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=[plan_name, "generator", "real_images",
                    *(["generator_adapter"] if adapted else [])],
              partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
    def refined_shards(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                       runtime: TorchRuntime) -> dg.MaterializeResult:
        """The round's extra images, partitioned like `synthetic_shards` (the same keys).

        Per partition two WebDataset tars: `refined-<key>.tar` (the plan's records) and
        `uniform-<key>.tar` (the control's), each a near-equal slice of its records, written
        atomically with a sidecar like the synthetic shards (same generator, sampler and
        bad-image policy), and kept when a rerun finds it finished from the same inputs.
        """
        from synthfactory.assets.generation import open_configured_generator
        from synthfactory.ops.generation.generate import generate_samples

        config = params.synthetic_shards
        plan_dir = store.require(plan_name)
        records = {arm: read_prompts(plan_dir / RECORDS[arm]) for arm in RECORDS}
        image_shape = read_image_shape(store.require("real_images"))
        model, settings = open_configured_generator(params, store, runtime)
        all_keys = partitions.get_partition_keys()
        written, started = [], time.perf_counter()
        for key in store.leased(name, context.partition_keys):  # one writer per partition
            for arm, arm_records in records.items():
                batch = partition_slice(arm_records, key, all_keys)
                tar_path = store.path(name, f"{arm}-{key}.tar")
                extra = {"generator_digest": model.digest, "arm": arm, "round": round_index,
                         "params_digest": params.digest("synthetic_shards"),
                         "records_digest": config_digest([r.to_json() for r in batch]),
                         "image_shape": list(image_shape)}
                if shard_is_current(tar_path, extra):
                    info = read_shard_info(tar_path)
                    context.log.info(f"{tar_path.name}: finished from the same inputs, kept")
                else:
                    store.retract(name, f"{arm}-{key}.json")
                    info = write_shard(tar_path, generate_samples(
                        model, batch, batch_size=config.batch_size, settings=settings,
                        bad_images=config.bad_images, max_attempts=config.max_attempts,
                        image_shape=image_shape), extra=extra)
                store.push(name, tar_path.name)
                store.push(name, f"{arm}-{key}.json")
                written.append({"shard": tar_path.name, "count": info.count,
                                "sha256": info.sha256})
        seconds = time.perf_counter() - started
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(store.path(name))),
            "shards": dg.MetadataValue.json(written), "seconds": round(seconds, 2),
            "n_images": sum(s["count"] for s in written), "generator_digest": model.digest})

    return refined_shards


def _classifier_asset(round_index: int, arm: str) -> dg.AssetsDefinition:
    rounds = [round_name("refined_shards", r) for r in range(1, round_index + 1)]
    name = round_name(f"classifier_{arm}", round_index)
    what = ("the plan's extra images" if arm == REFINED else
            "the same number of extra images spread uniformly over classes (the control)")

    @dg.asset(name=name, group_name="refinement", kinds={"pytorch", "safetensors"},
              code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["synthetic_shards", "real_images", *rounds],
              description=f"ConvNets trained from scratch on the synthetic arm plus {what} of "
                          f"rounds 1–{round_index}, with the recipe and seeds of every other "
                          "classifier: `seed-<k>.safetensors` and `history.json`.")
    def classifier(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                   runtime: TorchRuntime) -> dg.MaterializeResult:
        from synthfactory.ops.refinement.arms import with_extras

        data = with_extras(synthetic_arm(store.require("synthetic_shards")),
                           [store.require(r) for r in rounds], arm)
        n_classes = len(read_classes(store.require("real_images")))
        return train_arm(context, params.classifiers, store, runtime, name, data, n_classes)

    return classifier


def train_arm(context: dg.AssetExecutionContext, config: ClassifiersParams, store: ArtifactStore,
              runtime: TorchRuntime, name: str, data: TrainingData,
              n_classes: int) -> dg.MaterializeResult:
    """`n_seeds` classifiers on `data` with the `classifiers` recipe, published under `name`.

    The seeds are those of every other arm (`derive_seed(seed, "classifiers", k)`): arms
    differ by their data alone.
    """
    from synthfactory.assets.evaluation import train_seeds

    with store.publish_dir(name) as directory:
        histories = train_seeds(context, config, data, n_classes, runtime, directory, name)
        (directory / HISTORY_JSON).write_text(dumps_json({
            "arm": name, "n_train": len(data.images), "sources": data.sources,
            "soft_labels": False, "seeds": histories}))
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(store.path(name))), "n_train": len(data.images),
        "seeds": config.n_seeds, "sources": len(data.sources),
        "train_seconds": round(sum(h["seconds"] for h in histories), 1)})


def refinement_results(config: RefinementParams, store: ArtifactStore, device: "torch.device",
                       test_images: np.ndarray, test_labels: np.ndarray, names: list[str],
                       base_per_class: list[float]) -> tuple[dict, dict]:
    """For `eval_report`: the last round's refined and uniform arms (test results, as rows of
    `arms`) and the `refinement` block of metrics.json (every round, the worst class)."""
    from synthfactory.ops.refinement.arms import evaluate_classifiers
    from synthfactory.ops.refinement.summary import refinement_summary

    plans, results = [], {REFINED: [], UNIFORM: []}
    for round_index in range(1, config.rounds + 1):
        plan_dir = store.require(round_name("refinement_plan", round_index))
        plans.append(json.loads((plan_dir / PLAN_JSON).read_text()))
        for arm, rows in results.items():
            directory = store.require(round_name(f"classifier_{arm}", round_index))
            row = evaluate_classifiers(directory, test_images, test_labels, len(names), device)
            history = json.loads((directory / HISTORY_JSON).read_text())
            rows.append({"n_train": history["n_train"], **row})
    summary = refinement_summary(plans, results[REFINED], results[UNIFORM], base_per_class, names)
    return {arm: rows[-1] for arm, rows in results.items()}, summary
