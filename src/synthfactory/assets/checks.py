"""Asset checks: the data-quality gates a user reads next to each asset in the UI.

Blocking checks stop a run before a bad result flows downstream: corrupt or incomplete shards, a
distilled set of the wrong size. Every blocking check fails with ERROR severity (a failed WARN
check blocks nothing, so a warning is declared non-blocking); `synthfactory run` executes the
checks of what it materializes (`--no-checks` skips them). The pass-rate floor only warns (a
generator blind spot is worth seeing, not worth stopping for), and the accuracy floor fails the
report's check without blocking anything (nothing is downstream of the report). An arm whose data
ran out (a class the filter wiped out, `ipc` above what a class kept) is not a stop either: it is
recorded as not built, its checks warn, the report is still made and `eval_report_arms_built` names
it. Whether the run is sound warns too, with the number that tripped each bound:
`generator_converged` (the DDPM stopped on its held-out criterion, not at its ceiling still
improving) and `eval_report_soundness` (every bound of `eval_report.warnings`). The computations
are in `ops/checks.py` and in `ops/evaluation/` (soundness.py).
"""

# No `from __future__ import annotations`: Dagster validates the `context` hint as a type.
import json
from pathlib import Path

import dagster as dg

from synthfactory.ops import checks
from synthfactory.ops.data.prompts import PROMPTS_FILE, read_prompts
from synthfactory.ops.data.real_images import MANIFEST_JSON, read_classes
from synthfactory.ops.distillation.cells import cells
from synthfactory.ops.evaluation.arms import configured_arms
from synthfactory.ops.evaluation.class_sizes import class_sizes_outcome
from synthfactory.ops.evaluation.contamination import contamination_outcome
from synthfactory.ops.evaluation.missing import arms_built
from synthfactory.ops.evaluation.soundness import (generator_outcome, soundness_outcome,
                                                   soundness_warnings)
from synthfactory.ops.generation import GENERATOR_JSON
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.shards import read_shard_info
from synthfactory.params import Params
from synthfactory.resources.store import ArtifactStore


def _result(outcome: checks.CheckOutcome,
            severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
            **extra: dg.MetadataValue) -> dg.AssetCheckResult:
    """A Dagster check result from an ops-level outcome (details become JSON metadata)."""
    metadata = {key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
                for key, value in outcome.details.items()}
    return dg.AssetCheckResult(passed=outcome.passed, severity=severity,
                               description=outcome.description, metadata={**metadata, **extra})


@dg.asset_check(asset="real_images", blocking=True)
def real_images_integrity(store: ArtifactStore) -> dg.AssetCheckResult:
    """Every shard `manifest.json` records is there and matches it (sha256, sample count), the
    split counts add up, nothing unrecorded was added, and every sample decodes.

    Checked against the manifest, not against the files that happen to exist: a deleted shard
    (with its sidecar) fails, instead of letting the real arm train on fewer images.
    """
    directory = store.require("real_images")
    manifest = json.loads(store.require("real_images", MANIFEST_JSON).read_text())
    return _result(checks.manifest_integrity(directory, manifest))


@dg.asset_check(asset="synthetic_shards", blocking=True)
def synthetic_shards_integrity(store: ArtifactStore) -> dg.AssetCheckResult:
    """Every synthetic shard matches its sidecar (sha256, sample count) and every sample decodes.

    Blocking: the filter and the classifiers must never read a truncated or altered shard.
    """
    return _result(checks.shard_integrity(store.require("synthetic_shards")))


@dg.asset_check(asset="synthetic_shards", blocking=True, additional_deps=["prompts"])
def synthetic_shards_class_balance(context: dg.AssetCheckExecutionContext, params: Params,
                                   store: ArtifactStore) -> dg.AssetCheckResult:
    """The shards hold, class by class, exactly the images the prompt records ask for.

    Expected counts come from `prompts.jsonl`, never from the shards themselves; an image may
    be absent only as a drop counted in its shard's sidecar (`bad_images: drop`). A deleted
    shard, or a shard that lost a class's images, fails with the missing count per class. The
    shards expected are those Dagster recorded as materialized (and any on disk), so a backfill
    of some shards passes and lists the rest as not made yet; with no record at all (a store
    copied elsewhere) every shard is expected.
    """
    records = read_prompts(store.require("prompts", PROMPTS_FILE))
    made = context.instance.get_materialized_partitions(dg.AssetKey("synthetic_shards"))
    outcome = checks.shard_class_balance(
        store.require("synthetic_shards"), records, read_classes(store.require("real_images")),
        params.synthetic_shards.shard_size, made=made or None)
    table = ["| class | images | expected | dropped | missing |", "|---|---:|---:|---:|---:|"]
    table += [f"| {name} | {row['images']} | {row['expected']} | {row['dropped']} | "
              f"{row['missing']} |" for name, row in outcome.details["per_class"].items()]
    return _result(outcome, per_class_table=dg.MetadataValue.md("\n".join(table)))


@dg.asset_check(asset="filtered_set")
def filtered_set_pass_rate_floor(params: Params, store: ArtifactStore) -> dg.AssetCheckResult:
    """Warns when a class keeps less than `filtered_set.min_pass_rate` of its images.

    A class far below the others is a generator blind spot: the model does not draw it so that
    the judge recognises it. A warning, not a stop: the run goes on and the report shows it.
    """
    summary = json.loads((store.require("filtered_set") / SUMMARY_JSON).read_text())
    return _result(checks.pass_rate_floor(summary["per_class"], params.filtered_set.min_pass_rate),
                   severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="filtered_set", blocking=False)
def filtered_set_every_class_kept(store: ArtifactStore) -> dg.AssetCheckResult:
    """Every class keeps at least one image; otherwise the filtered and distilled arms lack it.

    A warning and declared non-blocking: those arms are then recorded as not built (with this
    reason) and the report is made from the others.
    """
    summary = json.loads((store.require("filtered_set") / SUMMARY_JSON).read_text())
    return _result(checks.every_class_kept(summary["per_class"], 1),
                   severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="filtered_set", blocking=False)
def filtered_set_scores_current(store: ArtifactStore) -> dg.AssetCheckResult:
    """Every finished synthetic shard is in the filtered set with its current bytes.

    `filtered_set` leaves out a shard whose scores are missing or stale (made for other bytes or
    under another judge) and goes on with the rest; this check records it as a failure (WARN:
    the downstream sets are then smaller than the shards, which a partial backfill can intend),
    naming the shards and the fix.
    """
    summary = json.loads((store.require("filtered_set") / SUMMARY_JSON).read_text())
    finished = {}
    for sidecar in store.require_files("synthetic_shards", "shard-*.json"):
        info = read_shard_info(sidecar.with_suffix(".tar"))
        if info is not None:
            finished[info.name] = info.sha256
    return _result(checks.shards_filtered(summary.get("shard_digests") or {}, finished),
                   severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="distilled_set", blocking=True)
def distilled_set_size(params: Params, store: ArtifactStore) -> dg.AssetCheckResult:
    """Every finished cell holds exactly its `ipc` images per class in each repeat, in intact
    shards, and so does the headline set (the first cell) at the top. Cells not made yet are
    listed (a backfill makes one cell per run); cells recorded as not built warn with their
    reasons (and block nothing: the report lists them, and the distilled arm as missing when
    the headline cell is one of them)."""
    config = params.distilled_set
    table = cells(list(config.methods), list(config.ipcs), list(config.sources))
    n_classes = len(read_classes(store.require("real_images")))
    outcome = checks.distilled_cells(store.require("distilled_set"), n_classes,
                                     [(cell.key, cell.ipc or None) for cell in table])
    if outcome.passed and outcome.details["not_built"]:
        return _result(checks.CheckOutcome(False, outcome.description, outcome.details),
                       severity=dg.AssetCheckSeverity.WARN)
    return _result(outcome)


@dg.asset_check(asset="eval_report")
def eval_report_accuracy_floor(params: Params) -> dg.AssetCheckResult:
    """Every configured arm of the registry (`classifiers.arms`, and the loop's arms with
    `refinement.rounds`) is in the report, and each arm named in `eval_report.accuracy_floor`
    reaches its floor on the real test split."""
    metrics = Path(params.eval_report.output_dir) / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} does not exist: materialize 'eval_report' first")
    floors = params.eval_report.accuracy_floor
    arms = configured_arms(params.classifiers.arms, judge_backend=params.judge.backend,
                           floors=floors, refinement=params.refinement.rounds > 0)
    return _result(checks.accuracy_floor(metrics, arms, floors))


@dg.asset_check(asset="real_images")
def real_images_class_sizes(store: ArtifactStore) -> dg.AssetCheckResult:
    """Warns when a class is more than 10x another, or has fewer than 20 test images (its
    per-class accuracy is then noise; the report marks it)."""
    manifest = json.loads((store.require("real_images") / MANIFEST_JSON).read_text())
    return _result(class_sizes_outcome(manifest["counts"]), severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="eval_report")
def eval_report_arms_built(params: Params) -> dg.AssetCheckResult:
    """Every arm was built and measured; a warning names each missing arm and why."""
    return _result(arms_built(_report_metrics(params)), severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="eval_report")
def eval_report_contamination(params: Params) -> dg.AssetCheckResult:
    """No synthetic image is a near-copy of a real test image (the leakage check); fails with
    the count per class otherwise (the report shows the pairs side by side)."""
    return _result(contamination_outcome(_report_metrics(params)))


@dg.asset_check(asset="generator", blocking=False)
def generator_converged(store: ArtifactStore) -> dg.AssetCheckResult:
    """The embedded DDPM stopped on its held-out criterion, or at its step ceiling no longer
    improving by more than `generator.ddpm.min_delta`; warns with the improvement it still made
    otherwise (its images may be worse than it can draw). A pretrained generator passes."""
    info = json.loads(store.require("generator", GENERATOR_JSON).read_text())
    return _result(generator_outcome(info), severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="eval_report", blocking=False)
def eval_report_soundness(params: Params, store: ArtifactStore) -> dg.AssetCheckResult:
    """The run is sound by every bound of `eval_report.warnings`: the generator converged, the
    judge recognises enough of every class, every arm fits its training set and agrees over its
    seeds, the real arm is not far below its longer-trained control, and the synthetic and
    filtered arms are not far below real. Warns with each number that tripped a bound (the
    report opens with the same warnings)."""
    metrics = _report_metrics(params)
    warnings = soundness_warnings(store.require, metrics,
                                  params.eval_report.warnings.model_dump())
    return _result(soundness_outcome(warnings), severity=dg.AssetCheckSeverity.WARN)


def _report_metrics(params: Params) -> dict:
    """The report's metrics.json (a clear error when the report was not made yet)."""
    metrics = Path(params.eval_report.output_dir) / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} does not exist: materialize 'eval_report' first")
    return json.loads(metrics.read_text())


ASSET_CHECKS = [real_images_integrity, synthetic_shards_integrity, synthetic_shards_class_balance,
                filtered_set_pass_rate_floor, filtered_set_every_class_kept,
                filtered_set_scores_current, distilled_set_size,
                eval_report_accuracy_floor, real_images_class_sizes, eval_report_arms_built,
                eval_report_contamination, generator_converged, eval_report_soundness]
