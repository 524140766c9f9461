"""When a run is not sound: the warnings the report opens with and its soundness check reads.

A table of accuracies is an answer only when the run that made it worked as intended. Each
warning names what it is about (`subject`), the number that tripped it (`value`) and the bound
it crossed (`bound`), with a sentence that says what it means and what to change:

- `generator_unconverged`: the embedded DDPM hit its step ceiling while its held-out loss was
  still improving by more than a relative `min_delta` over its last `patience` evaluations
  (generator.json `training`; the bound is the generator's own `min_delta`);
- `class_pass_rate`: the judge recognises (the filter keeps) less than `min_class_pass_rate`
  of one class's generated images (filtered_set's per-class pass rates);
- `seed_spread`: an arm's test accuracy varies over its classifier seeds by a sample std above
  `max_seed_std`;
- `underfit`: a seed of an arm reaches less than `min_train_accuracy` on its own training set
  (history.json `train_accuracy`): the recipe did not fit the data;
- `real_below_control`: the real arm's validation accuracy is below `min_real_vs_control` times
  that of the same recipe trained `classifiers.control_steps` times as long on one seed
  (classifier_real's history.json `control`): the shared step budget is too short;
- `synthetic_below_real`: the synthetic or filtered arm's test accuracy is more than
  `max_synthetic_gap` below the real arm's; the message names the classes that lose most
  against real (per-class accuracy), where the generated set does not stand in for the real one;
- `weak_retrieval`: the retrieved arm's label precision (the share of the retrieved images whose
  hidden label is the class they were retrieved for) is below `min_retrieval_precision`; the
  message names the classes retrieved worst. The baseline then trains on mislabelled images,
  so a generated arm beating it says little about generation;
- `skipped_images`: more than `max_skipped_share` of the real image files could not be used
  (corrupt, an image format that cannot be decoded such as HEIC, empty; hidden files and files
  without an image extension are not counted), so every arm
  is measured on part of the user's data; the message names the main reasons
  (real_images' manifest);
- `label_conflicts`: identical real images carry two or more classes (ops/data/duplicates.py);
  no classifier can get both right, so the real arm's ceiling is below 100% for reasons of the
  labels, not of the data; the message names an example.

Everything here is a pure function of what the assets recorded; `soundness_warnings` reads those
records from the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.checks import CheckOutcome
from synthfactory.ops.data.real_images import MANIFEST_JSON
from synthfactory.ops.evaluation.arms import ARMS
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.training import HISTORY_JSON

Warning = dict[str, Any]
Require = Callable[..., Path]
KINDS = ("generator_unconverged", "class_pass_rate", "seed_spread", "underfit",
         "real_below_control", "synthetic_below_real", "weak_retrieval", "skipped_images",
         "label_conflicts")
# The bounds when a caller gives none (params.yaml's eval_report.warnings has the same).
DEFAULT_BOUNDS = {"min_class_pass_rate": 0.5, "max_seed_std": 0.02, "min_train_accuracy": 0.9,
                  "min_real_vs_control": 0.95, "max_synthetic_gap": 0.05,
                  "min_retrieval_precision": 0.8, "max_skipped_share": 0.05}
# Skip reasons that are not lost images: hidden files (`.DS_Store`, macOS `._x.jpg` forks) and
# files without an image extension (notes, label CSVs); an image format that cannot be decoded
# (HEIC, camera RAW) has its own reason and counts.
NOT_IMAGES = ("hidden file", "not an image file")
# The arms trained on the generated set alone: the distilled set (100 images) is not one.
GENERATED_ARMS = ("synthetic", "filtered")


def warning(kind: str, subject: str, value: float, bound: float, message: str) -> Warning:
    """One warning, as metrics.json records it."""
    return {"kind": kind, "subject": subject, "value": round(float(value), 4),
            "bound": float(bound), "message": message}


def generator_warnings(training: Mapping[str, Any] | None) -> list[Warning]:
    """The DDPM stopped at its ceiling while its held-out loss still improved by more than
    its relative `min_delta` (None or a fixed-length training: nothing to say)."""
    if not training or training.get("stopped_by") != "ceiling":
        return []
    improvement, bound = training.get("recent_improvement"), float(training["min_delta"])
    if improvement is None or improvement <= bound:
        return []
    return [warning("generator_unconverged", "generator", improvement, bound,
                    f"the generator stopped at its ceiling of {training['ceiling']} steps while "
                    f"its validation loss was still improving ({improvement:.1%} over its last "
                    f"{training['patience']} evaluations, more than min_delta {bound:g}): its "
                    "images may be worse than it can draw; raise generator.ddpm.train_steps "
                    "(or leave it null to follow the data)")]


def pass_rate_warnings(per_class: Mapping[str, Mapping[str, Any]], bound: float) -> list[Warning]:
    """Each class whose generated images the judge recognises (the filter keeps) less than
    `bound` of."""
    return [warning("class_pass_rate", name, float(row["pass_rate"]), bound,
                    f"the judge recognises {float(row['pass_rate']):.0%} of the generated images "
                    f"of class {name!r} (bound {bound:g}): the generator does not draw it well; "
                    "the synthetic arms learn it from few or atypical images")
            for name, row in per_class.items() if float(row["pass_rate"]) < bound]


def seed_spread_warnings(arm_rows: Mapping[str, Mapping[str, Any]], bound: float
                         ) -> list[Warning]:
    """Each arm whose test accuracy's sample std over seeds is above `bound`."""
    return [warning("seed_spread", arm, float(row["accuracy_std"]), bound,
                    f"the {arm} arm's seeds disagree: accuracy std {float(row['accuracy_std']):.3f}"
                    f" over {row.get('seeds', '?')} seeds (bound {bound:g}); its mean is not one "
                    "answer: the recipe is unstable on this set (learning rate, steps)")
            for arm, row in arm_rows.items()
            if row.get("accuracy_std") is not None and float(row["accuracy_std"]) > bound]


def fit_warnings(histories: Mapping[str, Mapping[str, Any]], bound: float) -> list[Warning]:
    """Each arm with a seed whose training accuracy is below `bound` (its lowest seed)."""
    found = []
    for arm, history in histories.items():
        accuracies = [float(seed["train_accuracy"]) for seed in history.get("seeds", [])
                      if seed.get("train_accuracy") is not None]
        if accuracies and min(accuracies) < bound:
            found.append(warning(
                "underfit", arm, min(accuracies), bound,
                f"the {arm} arm did not fit its own training set: a seed reaches "
                f"{min(accuracies):.3f} training accuracy (bound {bound:g}); the recipe "
                "(learning rate, steps) is wrong for this data, and its test accuracy says "
                "little about the data"))
    return found


def control_warnings(control: Mapping[str, Any] | None, bound: float) -> list[Warning]:
    """The real arm's validation accuracy below `bound` × the longer-trained control's."""
    if not control or not control.get("val_accuracy"):
        return []
    ratio = float(control["arm_val_accuracy"]) / float(control["val_accuracy"])
    if ratio >= bound:
        return []
    return [warning("real_below_control", "real", ratio, bound,
                    f"the real arm reaches {float(control['arm_val_accuracy']):.3f} validation "
                    f"accuracy, {ratio:.3f} of the {float(control['val_accuracy']):.3f} that "
                    f"the same recipe reaches with {control['factor']:g}x the steps "
                    f"({control['steps']}) (bound {bound:g}): the step budget is too short for "
                    "this data; raise classifiers.epochs / min_steps")]


def synthetic_gap_warnings(arm_rows: Mapping[str, Mapping[str, Any]], class_names: list[str],
                           bound: float) -> list[Warning]:
    """The synthetic and filtered arms more than `bound` below the real arm's test accuracy,
    each naming its three classes furthest below real's."""
    real = arm_rows.get("real")
    if real is None:
        return []
    found = []
    for arm in GENERATED_ARMS:
        row = arm_rows.get(arm)
        if row is None:
            continue
        gap = float(real["accuracy_mean"]) - float(row["accuracy_mean"])
        if gap <= bound:
            continue
        losses = np.asarray(real.get("per_class_accuracy") or [], float) - np.asarray(
            row.get("per_class_accuracy") or [], float)
        worst = [f"{class_names[k] if k < len(class_names) else k} "
                 f"({row['per_class_accuracy'][k]:.2f} vs {real['per_class_accuracy'][k]:.2f})"
                 for k in np.argsort(-losses)[:3]] if losses.size else []
        found.append(warning(
            "synthetic_below_real", arm, gap, bound,
            f"the {arm} arm is {100 * gap:.1f} points below real (bound {100 * bound:g}): the "
            "generated set does not stand in for these real images"
            + (f"; it loses most on {', '.join(worst)}" if worst else "")
            + ". See what the generator made (coverage, precision, the closest pairs) and the "
            "per-class pass rates; more generator training, another guidance mix or real "
            "images of those classes are the levers"))
    return found


def retrieval_warnings(arm_rows: Mapping[str, Mapping[str, Any]], bound: float) -> list[Warning]:
    """The retrieved arm's label precision below `bound`, naming its three worst classes (no
    retrieved arm, or none measured: nothing to say)."""
    precision = (arm_rows.get("retrieved") or {}).get("label_precision") or {}
    overall = precision.get("overall")
    if overall is None or overall >= bound:
        return []
    per_class = precision.get("per_class") or {}
    worst = sorted(per_class, key=lambda name: per_class[name])[:3]
    return [warning(
        "weak_retrieval", "retrieved", overall, bound,
        f"the retrieved arm's images carry the right label for {overall:.2f} of them (bound "
        f"{bound:g}); worst "
        + ", ".join(f"{name} ({per_class[name]:.2f})" for name in worst)
        + ": the ranking learned from the labelled part does not find these classes in the "
        "pool, so the retrieved arm trains on mislabelled images and a generated arm above it "
        "says little about generation. More labelled images per class "
        "(retrieval.labelled_per_class) or another retrieval.embedding are the levers")]


def real_data_warnings(manifest: Mapping[str, Any], bound: float) -> list[Warning]:
    """The real images' own problems, from real_images' manifest: a share of the files above
    `bound` skipped (naming the main reasons), and identical images under two classes."""
    found = []
    skipped = {reason: int(count) for reason, count in (manifest.get("skipped") or {}).items()
               if not reason.startswith(NOT_IMAGES)}
    used = sum(sum(per_class.values()) for per_class in (manifest.get("counts") or {}).values())
    lost = sum(skipped.values())
    share = lost / max(lost + used, 1)
    if share > bound:
        reasons = sorted(skipped.items(), key=lambda item: -item[1])[:3]
        found.append(warning(
            "skipped_images", "real_images", share, bound,
            f"{lost} of {lost + used} real image files ({share:.0%}, bound {bound:.0%}) could "
            "not be used (" + ", ".join(f"{count} {reason}" for reason, count in reasons)
            + "): every arm is measured on the rest of the data; convert or repair those files "
            "(real_images' manifest lists the counts)"))
    duplicates = manifest.get("duplicates") or {}
    conflicts = int(duplicates.get("label_conflicts") or 0)
    if conflicts:
        example = next((e for e in duplicates.get("examples", []) if len(e["classes"]) > 1),
                       None)
        shown = ("" if example is None else f" (e.g. {', '.join(example['sources'][:2])} in "
                 f"{', '.join(example['classes'])})")
        found.append(warning(
            "label_conflicts", "real_images", conflicts, 0,
            f"{conflicts} group(s) of identical images are labelled with two or more "
            f"classes{shown}: "
            "no classifier can get both labels right, so every arm's accuracy has a ceiling "
            "below 100% that is the labels', not the data's; fix the labels or remove the "
            "copies (real_images' manifest lists them)"))
    return found


def evaluate_soundness(generator_info: Mapping[str, Any], per_class: Mapping[str, Any],
                       arm_rows: Mapping[str, Mapping[str, Any]],
                       histories: Mapping[str, Mapping[str, Any]],
                       bounds: Mapping[str, float], class_names: list[str] | None = None,
                       real_manifest: Mapping[str, Any] | None = None) -> list[Warning]:
    """Every warning of a run, from its records (`bounds`: eval_report.warnings; a bound not
    given is DEFAULT_BOUNDS'); the real images' own first."""
    bounds = {**DEFAULT_BOUNDS, **bounds}
    return [*real_data_warnings(real_manifest or {}, bounds["max_skipped_share"]),
            *generator_warnings(generator_info.get("training")),
            *pass_rate_warnings(per_class, bounds["min_class_pass_rate"]),
            *seed_spread_warnings(arm_rows, bounds["max_seed_std"]),
            *fit_warnings(histories, bounds["min_train_accuracy"]),
            *control_warnings((histories.get("real") or {}).get("control"),
                              bounds["min_real_vs_control"]),
            *synthetic_gap_warnings(arm_rows, list(class_names or []),
                                    bounds["max_synthetic_gap"]),
            *retrieval_warnings(arm_rows, bounds["min_retrieval_precision"])]


def soundness_warnings(require: Require, metrics: Mapping[str, Any],
                       bounds: Mapping[str, float]) -> list[Warning]:
    """metrics.json's `warnings`: `evaluate_soundness` over the store's records (real_images'
    manifest, generator.json, filtered_set's summary, each measured arm's history.json) and the
    report's arm rows."""
    real_manifest = json.loads((require("real_images") / MANIFEST_JSON).read_text())
    generator_info = json.loads((require("generator") / "generator.json").read_text())
    summary = json.loads((require("filtered_set") / SUMMARY_JSON).read_text())
    histories = {}
    for arm in metrics["arms"]:
        asset = ARMS[arm].classifier_asset if arm in ARMS else None
        path = None if asset is None else require(asset) / HISTORY_JSON
        if path is not None and path.is_file():
            histories[arm] = json.loads(path.read_text())
    return evaluate_soundness(generator_info, summary["per_class"], metrics["arms"], histories,
                              bounds, class_names=list(metrics.get("classes") or []),
                              real_manifest=real_manifest)


def soundness_outcome(warnings: list[Warning]) -> CheckOutcome:
    """The report's soundness check: passes without warnings; otherwise each one's number."""
    if not warnings:
        return CheckOutcome(True, "no warning: the generator converged, every class is "
                                  "recognised, every arm fits and agrees over its seeds",
                            {"warnings": []})
    lines = [f"{w['kind']} {w['subject']}: {w['value']:g} (bound {w['bound']:g})"
             for w in warnings]
    return CheckOutcome(False, f"{len(warnings)} warning(s): " + "; ".join(lines),
                        {"warnings": warnings})


def generator_outcome(info: Mapping[str, Any]) -> CheckOutcome:
    """The generator's check: its training converged by the held-out criterion, or reached
    the ceiling no longer improving by more than min_delta (a pretrained one passes)."""
    training = info.get("training")
    found = generator_warnings(training)
    if found:
        return CheckOutcome(False, found[0]["message"], {"warning": found[0], **training})
    if not training:
        return CheckOutcome(True, f"nothing trained here ({info.get('source', 'pretrained')})")
    return CheckOutcome(True, f"stopped by the {training['stopped_by']} at step "
                              f"{training['steps']} of {training['ceiling']}",
                        {key: value for key, value in training.items()
                         if key != "validation_curve"})
