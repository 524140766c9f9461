"""The closed loop: weak-class refinement rounds and their equal-budget controls.

Round r is six assets: `refinement_plan`, `refined_shards` and one classifier per arm of the 2×2
at equal image budget (allocation × recipe, ops/refinement/plan.py): `classifier_refined`
(targeted, the plan's recipe), `classifier_targeted_base` (targeted, base recipe),
`classifier_uniform_plan` (uniform, the plan's recipe) and `classifier_uniform` (uniform, base
recipe) (round 1 has these names; round r > 1 adds `_round<r>`). Dagster's asset
graph cannot hold a cycle between assets, so the rounds are unrolled: round r's plan depends on
round r-1's `classifier_refined`, and the graph itself says in which order rounds run (one
`synthfactory run` runs them all; the UI shows each round's plan and results as assets of
their own). `refinement.rounds` fixes how many exist when the code location loads, as the
shard count does; raising it adds rounds without renaming the earlier ones.

They sit between the classifiers and `eval_report`, not after it: the plan reads *validation*
results only (it evaluates the classifiers on the val split itself), `metrics.json` has one
writer (`eval_report`, which adds the four arms to `arms` and `refinement`), and DVC
forbids two stages owning one output.
"""


import time
import warnings

import dagster as dg

from synthfactory.executors import GPU_OP_TAGS
from synthfactory.ops.data.prompts import read_prompts
from synthfactory.ops.data.real_images import read_classes, read_image_shape
from synthfactory.ops.evaluation.arms import synthetic_arm
from synthfactory.ops.refinement.plan import (LOOP_ARMS, PLAN_JSON, REFINED, TARGETED_BASE,
                                              UNIFORM, UNIFORM_PLAN, PlanSettings,
                                              partition_slice)
from synthfactory.ops.refinement.rounds import RECORDS, round_name
from synthfactory.params import Params, ProjectConfig, config_digest
from synthfactory.asset_inputs import classifier_budgets
from synthfactory.publishing import open_configured_generator, path_md, placement
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


def refinement_assets(config: ProjectConfig,
                      partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """Every round's six assets (none when `refinement.rounds` is 0)."""
    assets = []
    for round_index in range(1, config.params.refinement.rounds + 1):
        adapted = config.params.generator.adapt == "lora"
        with warnings.catch_warnings():  # BackfillPolicy is beta (see generation.py)
            warnings.simplefilter("ignore", dg.BetaWarning)
            assets += [_plan_asset(round_index), _shards_asset(round_index, partitions, adapted),
                       *(_classifier_asset(round_index, arm) for arm in LOOP_ARMS)]
    return assets


def _plan_asset(round_index: int) -> dg.AssetsDefinition:
    evaluated = "classifier_synthetic" if round_index == 1 else round_name("classifier_refined",
                                                                            round_index - 1)
    previous = [] if round_index == 1 else [round_name("refinement_plan", round_index - 1)]
    name = round_name("refinement_plan", round_index)

    @dg.asset(name=name, group_name="refinement",
              kinds={"json"}, code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=[evaluated, "classifier_real", "real_images", "filtered_set", "prompts",
                    *previous])
    def refinement_plan(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                        runtime: TorchRuntime) -> dg.MaterializeResult:
        """Which classes get how many of the round's extra images, with which recipe, and why.

        Reads validation results only: the evaluated arm's (the synthetic arm in round 1, the
        previous round's refined arm after) and the real arm's per-class accuracy on the val
        split, the confusion pairs, and the filter's per-class pass rates. Writes `plan.json`
        (per class: evidence, images, recipe changes, reason) and the prompt records of each arm
        of the 2×2 (`refined.jsonl`, `targeted_base.jsonl`, `uniform_plan.jsonl`,
        `uniform.jsonl`).
        """
        from synthfactory.ops.refinement.round_plan import plan_round  # deferred: torch

        round_plan = plan_round(
            round_index, evaluated, store.require,
            store.require(previous[0]) / PLAN_JSON if previous else None,
            _plan_settings(params), params.prompts.display_names, runtime.seed,
            runtime.torch_device)
        with store.publish_dir(name) as directory:
            round_plan.write(directory)
        for p in round_plan.classes:
            if p.images:
                context.log.info(f"{name}: class {p.name}: {p.images} images, {p.changes}")
        accuracy = round_plan.plan["val_accuracy"]
        return dg.MaterializeResult(metadata={
            "path": path_md(store, name),
            "evaluated_arm": evaluated, "val_accuracy": round(accuracy["evaluated"], 4),
            "real_val_accuracy": round(accuracy["real"], 4),
            "plan": dg.MetadataValue.md(_plan_table(round_plan.classes)),
        })

    return refinement_plan


def _plan_settings(params: Params) -> PlanSettings:
    """The planner's settings: the `refinement` section and the generator's backend."""
    config = params.refinement
    return PlanSettings(
        budget=config.budget, recipes=tuple(config.recipes), min_gap=config.min_gap,
        pass_rate_high=config.pass_rate_high, pass_rate_low=config.pass_rate_low,
        confusion_share=config.confusion_share, guidance_factor=config.guidance_factor,
        min_guidance=config.min_guidance, diversity_levels=config.diversity_levels,
        templates=tuple(config.templates),
        text_backend=params.generator.backend == "diffusers")
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

        Per partition one WebDataset tar per arm of the 2×2 (`refined-<key>.tar`,
        `targeted_base-<key>.tar`, `uniform_plan-<key>.tar`, `uniform-<key>.tar`; each arm's
        seeds derive from (round, arm)), each a near-equal slice of its records, written
        atomically with a sidecar like the synthetic shards (same generator, sampler and
        bad-image policy), and kept when a rerun finds it finished from the same inputs.
        """
        from synthfactory.ops.generation.shard_writing import write_generated_shard  # deferred: torch

        records = {arm: read_prompts(store.require(plan_name) / RECORDS[arm]) for arm in RECORDS}
        image_shape = read_image_shape(store.require("real_images"))
        model, settings = open_configured_generator(params, store, runtime)
        written, started = [], time.perf_counter()
        for key in store.leased(name, context.partition_keys):  # one writer per partition
            for arm, arm_records in records.items():
                batch = partition_slice(arm_records, key, partitions.get_partition_keys())
                extra = {"generator_digest": model.digest, "arm": arm, "round": round_index,
                         "params_digest": params.digest("synthetic_shards"),
                         "records_digest": config_digest([r.to_json() for r in batch]),
                         "image_shape": list(image_shape)}
                shard = write_generated_shard(store, name, f"{arm}-{key}", model, batch, extra,
                                              params.synthetic_shards, settings, image_shape,
                                              count_bad_images=False)
                if shard.reused:
                    context.log.info(f"{arm}-{key}.tar: finished from the same inputs, kept")
                written.append({"shard": f"{arm}-{key}.tar", "count": shard.info.count,
                                "sha256": shard.info.sha256})
        return dg.MaterializeResult(metadata={
            "path": path_md(store, name), "shards": dg.MetadataValue.json(written),
            "seconds": round(time.perf_counter() - started, 2),
            "n_images": sum(s["count"] for s in written), "generator_digest": model.digest})

    return refined_shards


# What each arm adds to the synthetic arm (the asset descriptions).
EXTRAS = {
    REFINED: "the plan's extra images (its allocation, its recipe)",
    TARGETED_BASE: "as many extra images with the plan's allocation and the base recipe",
    UNIFORM_PLAN: "as many extra images spread uniformly over classes with the plan's recipe",
    UNIFORM: "as many extra images spread uniformly over classes with the base recipe (the "
             "original control)",
}


def _classifier_asset(round_index: int, arm: str) -> dg.AssetsDefinition:
    rounds = [round_name("refined_shards", r) for r in range(1, round_index + 1)]
    name = round_name(f"classifier_{arm}", round_index)
    what = EXTRAS[arm]

    @dg.asset(name=name, group_name="refinement", kinds={"pytorch", "safetensors"},
              code_version="1", pool="gpu", op_tags=GPU_OP_TAGS,
              deps=["synthetic_shards", "real_images", *rounds],
              description=f"ConvNets trained from scratch on the synthetic arm plus {what} of "
                          f"rounds 1–{round_index}, with the recipe and seeds of every other "
                          "classifier: `seed-<k>.safetensors` and `history.json`.")
    def classifier(context: dg.AssetExecutionContext, params: Params, store: ArtifactStore,
                   runtime: TorchRuntime) -> dg.MaterializeResult:
        # deferred: torch
        from synthfactory.ops.evaluation.arm_training import train_loop_arm
        from synthfactory.ops.refinement.arms import with_extras  # deferred: torch

        data = with_extras(synthetic_arm(store.require("synthetic_shards")),
                           [store.require(r) for r in rounds], arm)
        n_classes = len(read_classes(store.require("real_images")))
        # The seeds are those of every other arm: arms differ by their data alone.
        with store.publish_dir(name) as directory:
            histories = train_loop_arm(name, data, n_classes, params.classifiers,
                                       placement(runtime), directory, context.log.info,
                                       classifier_budgets(params, store)["reference"])
        return dg.MaterializeResult(metadata={
            "path": path_md(store, name), "n_train": len(data.images),
            "seeds": params.classifiers.n_seeds, "sources": len(data.sources),
            "train_seconds": round(sum(h["seconds"] for h in histories), 1)})

    return classifier
