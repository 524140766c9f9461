"""A run that knows when it is unsound: each warning trips on a planted bad case, with the number
that tripped it and its bound, and a sound tiny run has none. (The generator's own warning, a DDPM
stopped after 10 steps, is in tests/ops/generation/test_ddpm_stopping.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthfactory.ops.curation.filters import FilterSettings, filter_samples
from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.evaluation.arm_training import train_arm
from synthfactory.ops.evaluation.arms import TrainingData
from synthfactory.ops.evaluation.evaluate import Split, score_predictions
from synthfactory.ops.evaluation.soundness import (control_warnings, evaluate_soundness,
                                                   fit_warnings, pass_rate_warnings,
                                                   seed_spread_warnings, soundness_outcome,
                                                   soundness_warnings)
from synthfactory.ops.report.document import render_markdown
from synthfactory.ops.report.warnings import warnings_section
from synthfactory.ops.training.budget import Budget
from synthfactory.ops.training.classifiers import Placement
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import ClassifierSettings, load_classifier, train_classifier
from synthfactory.params.evaluation import ClassifiersParams, WarningsParams

CPU = torch.device("cpu")
BOUNDS = WarningsParams().model_dump()
CLASSES = [str(k) for k in range(10)]


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    data = load_digits(8, 1)
    return {"train": data.images[:600], "train_labels": data.labels[:600],
            "val": data.images[600:900], "val_labels": data.labels[600:900]}


def _train_arm(digits: dict[str, np.ndarray], directory: Path, *, steps: int,
               **config: Any) -> dict[str, Any]:
    """An arm's classifiers (width 16) on the digits' first 600 images, `steps` steps each."""
    data = TrainingData(digits["train"], digits["train_labels"], digits["train_labels"],
                        [f"k{i}" for i in range(600)], ["train"])
    settings = ClassifiersParams(**{"n_seeds": 2, "width": 16, "epochs": 1, "min_steps": steps,
                                    **config})
    budget = Budget("equal_steps", steps, steps * 128, 128, "test")
    return train_arm("real", data, 10, settings, Placement(seed=0, device=CPU), directory,
                     "classifier_real", directory / "ddp", lambda _: None, budget,
                     val=(digits["val"], digits["val_labels"]))


def _row(directory: Path, digits: dict[str, np.ndarray]) -> dict[str, Any]:
    """The arm's metrics row, scored on the validation images (the test split stays out)."""
    predictions = [predict_proba(load_classifier(path, CPU), digits["val"], device=CPU).argmax(1)
                   for path in sorted(directory.glob("seed-*.safetensors"))]
    return score_predictions(predictions, Split(digits["val"], digits["val_labels"]), 10)


def _judged(digits: dict[str, np.ndarray], images: np.ndarray) -> dict[str, Any]:
    """filtered_set's summary of `images` labelled as the validation labels, judged by a small
    classifier trained on the train images (the embedded judge's kind of model)."""
    judge, _ = train_classifier(digits["train"], digits["train_labels"], 10,
                                ClassifierSettings(width=16, steps=150, learning_rate=0.1),
                                seed=0, device=CPU)
    probs = predict_proba(judge, images, device=CPU)
    _, summary = filter_samples([f"s{i}" for i in range(len(images))], digits["val_labels"],
                                probs, np.zeros((len(images), 4), np.float32), images,
                                FilterSettings(threshold=0.2, dedup=False), CLASSES)
    return summary


def test_a_class_the_generator_cannot_draw_trips_the_pass_rate_warning(
        digits: dict[str, np.ndarray]) -> None:
    # The "generator" draws every class right but 3: asked for a 3, it draws an 8.
    images = digits["val"].copy()
    threes = np.flatnonzero(digits["val_labels"] == 3)
    eights = digits["val"][digits["val_labels"] == 8]
    images[threes] = eights[np.arange(len(threes)) % len(eights)]
    summary = _judged(digits, images)
    [found] = pass_rate_warnings(summary["per_class"], BOUNDS["min_class_pass_rate"])
    assert found["kind"] == "class_pass_rate" and found["subject"] == "3"
    assert found["value"] < 0.1 and found["bound"] == 0.5
    assert found["value"] == round(summary["per_class"]["3"]["pass_rate"], 4)


def test_a_diverging_learning_rate_trips_the_fit_warning(digits: dict[str, np.ndarray],
                                                         tmp_path: Path) -> None:
    history = _train_arm(digits, tmp_path, steps=40, learning_rate=50.0, control_steps=0)
    [found] = fit_warnings({"real": history}, BOUNDS["min_train_accuracy"])
    assert found["kind"] == "underfit" and found["subject"] == "real"
    assert found["value"] < 0.5 and found["bound"] == 0.9
    assert "control" not in history  # control_steps 0: none


def test_seeds_that_disagree_trip_the_spread_warning() -> None:
    # The 16-px folder: the synthetic arm at 0.604 ± 0.096 over its seeds.
    rows = {"real": {"accuracy_std": 0.004, "seeds": 3},
            "synthetic": {"accuracy_std": 0.096, "seeds": 3}}
    [found] = seed_spread_warnings(rows, BOUNDS["max_seed_std"])
    assert (found["kind"], found["subject"], found["value"], found["bound"]) == (
        "seed_spread", "synthetic", 0.096, 0.02)


def test_a_budget_too_short_for_the_data_trips_the_control_warning(
        digits: dict[str, np.ndarray], tmp_path: Path) -> None:
    # 3 steps: the real arm stops long before it learns; its control trains 30x as long.
    history = _train_arm(digits, tmp_path, steps=3, learning_rate=0.1, control_steps=30.0)
    control = history["control"]
    assert control["steps"] == 90 and control["factor"] == 30.0 and control["n_val"] == 300
    [found] = control_warnings(control, BOUNDS["min_real_vs_control"])
    assert found["kind"] == "real_below_control" and found["bound"] == 0.95
    assert found["value"] == round(control["arm_val_accuracy"] / control["val_accuracy"], 4)
    assert found["value"] < 0.95


def test_a_sound_tiny_run_has_no_warning(digits: dict[str, np.ndarray], tmp_path: Path) -> None:
    store = tmp_path / "data"
    history = _train_arm(digits, store / "classifier_real", steps=150, learning_rate=0.1)
    assert history["control"]["steps"] == 300
    (store / "generator").mkdir(parents=True)
    (store / "generator" / "generator.json").write_text(json.dumps({"training": {
        "stopped_by": "criterion", "converged": True, "recent_improvement": 0.004,
        "min_delta": 0.01, "ceiling": 1600, "steps": 640, "patience": 3}}))
    (store / "filtered_set").mkdir()
    (store / "real_images").mkdir()  # every file read, no copies under two classes
    (store / "real_images" / "manifest.json").write_text(json.dumps({
        "skipped": {}, "counts": {"train": {"0": 100}}, "duplicates": {"label_conflicts": 0}}))
    summary = _judged(digits, digits["val"])  # a generator that draws every class
    (store / "filtered_set" / "summary.json").write_text(json.dumps(summary))
    metrics = {"arms": {"real": _row(store / "classifier_real", digits)}}
    warnings = soundness_warnings(lambda name: store / name, metrics, BOUNDS)
    assert warnings == [], warnings
    assert soundness_outcome(warnings).passed
    assert warnings_section({"warnings": warnings}, {}) is None  # the verdicts open the report


def test_every_warning_is_reported_first_with_its_number_and_bound() -> None:
    training = {"stopped_by": "ceiling", "recent_improvement": 0.2, "min_delta": 0.01,
                "ceiling": 10, "patience": 3}
    warnings = evaluate_soundness(
        {"training": training}, {"3": {"pass_rate": 0.0}, "4": {"pass_rate": 0.9}},
        {"synthetic": {"accuracy_std": 0.096, "seeds": 3}},
        {"real": {"seeds": [{"train_accuracy": 0.1}],
                  "control": {"arm_val_accuracy": 0.5, "val_accuracy": 0.9, "factor": 2.0,
                              "steps": 480}}}, BOUNDS)
    assert [w["kind"] for w in warnings] == ["generator_unconverged", "class_pass_rate",
                                             "seed_spread", "underfit", "real_below_control"]
    outcome = soundness_outcome(warnings)
    assert not outcome.passed and "5 warning(s)" in outcome.description
    assert "class_pass_rate 3: 0 (bound 0.5)" in outcome.description
    section = warnings_section({"warnings": warnings}, {})
    assert section is not None
    markdown = render_markdown([section])
    assert markdown.startswith("# Warnings: this run may not be sound (5)")
    assert "| seeds disagree | synthetic | 0.096 | 0.02 |" in markdown
    assert "| real arm below its longer-trained control | real | 0.5556 | 0.95 |" in markdown


def test_the_default_bounds_are_the_params_defaults() -> None:
    from synthfactory.ops.evaluation.soundness import DEFAULT_BOUNDS

    assert DEFAULT_BOUNDS == BOUNDS


def test_a_generated_set_far_below_real_trips_the_gap_warning_naming_its_classes() -> None:
    """The beyond-digits coloured folder: synthetic 6.6 points under real. The warning names
    the gap, its bound and the classes that lose most; a 1-point gap and the distilled arm
    (100 images, expected lower) do not trip it."""
    from synthfactory.ops.evaluation.soundness import synthetic_gap_warnings

    real = {"accuracy_mean": 0.966, "per_class_accuracy": [0.98, 0.97, 0.95]}
    rows = {"real": real,
            "synthetic": {"accuracy_mean": 0.900, "per_class_accuracy": [0.97, 0.80, 0.93]},
            "filtered": {"accuracy_mean": 0.956, "per_class_accuracy": [0.97, 0.95, 0.95]},
            "distilled": {"accuracy_mean": 0.870, "per_class_accuracy": [0.9, 0.8, 0.9]}}
    [found] = synthetic_gap_warnings(rows, ["zero", "one", "two"], BOUNDS["max_synthetic_gap"])
    assert (found["kind"], found["subject"], found["value"], found["bound"]) == (
        "synthetic_below_real", "synthetic", 0.066, 0.05)
    assert "6.6 points below real" in found["message"]
    assert "loses most on one (0.80 vs 0.97), two (0.93 vs 0.95)" in found["message"]
    assert synthetic_gap_warnings({"synthetic": rows["synthetic"]}, [], 0.05) == []  # no real


def test_a_retrieval_baseline_on_mislabelled_images_trips_the_weak_retrieval_warning() -> None:
    """The beyond-digits coloured folder: the retrieved images carry the right label for 0.56
    of them. The warning names the precision, its bound and the worst classes; the digits'
    0.95, a run without a retrieved arm and one whose precision was not measured do not."""
    from synthfactory.ops.evaluation.soundness import evaluate_soundness, retrieval_warnings

    weak = {"retrieved": {"label_precision": {
        "overall": 0.56, "per_class": {"zero": 0.77, "one": 0.44, "two": 0.9, "three": 0.37}}}}
    [found] = retrieval_warnings(weak, BOUNDS["min_retrieval_precision"])
    assert (found["kind"], found["subject"], found["value"], found["bound"]) == (
        "weak_retrieval", "retrieved", 0.56, 0.8)
    assert "worst three (0.37), one (0.44), zero (0.77)" in found["message"]
    assert retrieval_warnings({"retrieved": {"label_precision": {"overall": 0.95}}}, 0.8) == []
    assert retrieval_warnings({"real": {}}, 0.8) == []
    assert retrieval_warnings({"retrieved": {"label_precision": None}}, 0.8) == []
    # the report's list carries it
    warnings = evaluate_soundness({}, {}, weak, {}, {})
    assert [w["kind"] for w in warnings] == ["weak_retrieval"]
    section = warnings_section({"warnings": warnings}, {})
    assert section is not None
    assert "retrieval baseline mislabels its images" in json.dumps(
        [getattr(block, "rows", None) for block in section.blocks])
