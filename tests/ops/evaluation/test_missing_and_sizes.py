"""The report's caveats: missing arms with their reasons, class sizes and noisy per-class numbers."""

from __future__ import annotations

import json
from pathlib import Path

from synthfactory.ops.checks import accuracy_floor
from synthfactory.ops.evaluation.class_sizes import class_sizes_outcome, data_entry
from synthfactory.ops.evaluation.missing import arms_built, missing_arms
from synthfactory.ops.report.document import write_report
from synthfactory.ops.storage.not_built import write_not_built
from tests.ops.report.test_report import _grids, _metrics

REASON = "class 3 has 9 samples in the source set, fewer than distilled_set.ipc = 10"


def _partial_metrics() -> dict:
    metrics = _metrics(("real", "synthetic", "filtered"))
    metrics["missing_arms"] = {"distilled": f"distilled_set was not built: {REASON}"}
    names = metrics["classes"]
    metrics["data"] = data_entry({"train": dict.fromkeys(names, 300) | {names[2]: 12},
                                  "val": dict.fromkeys(names, 30),
                                  "test": dict.fromkeys(names, 90) | {names[1]: 7}})
    return metrics


def test_missing_arms_are_read_from_their_records(tmp_path: Path) -> None:
    for arm in ("real", "distilled"):
        (tmp_path / arm).mkdir()
    write_not_built(tmp_path / "distilled", "classifier_distilled", REASON)
    assert missing_arms({arm: tmp_path / arm for arm in ("real", "distilled")}) == {
        "distilled": REASON}


def test_the_report_names_each_missing_arm_and_why(tmp_path: Path) -> None:
    write_report(tmp_path, _partial_metrics(), _grids())
    markdown = (tmp_path / "report.md").read_text()
    assert "## Arms not built" in markdown
    assert f"| distilled | distilled_set was not built: {REASON} |" in markdown
    assert "the others (filtered, real, synthetic) were trained" in markdown
    assert json.loads((tmp_path / "metrics.json").read_text())["missing_arms"] == {
        "distilled": f"distilled_set was not built: {REASON}"}
    outcome = arms_built(_partial_metrics())
    assert not outcome.passed and "arm 'distilled' was not built" in outcome.description
    assert arms_built(_metrics() | {"missing_arms": {}}).passed


def test_an_arm_with_a_floor_that_was_not_built_fails_its_floor(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(_partial_metrics()))
    arms = sorted({*_partial_metrics()["arms"], "distilled"})
    outcome = accuracy_floor(path, arms, {"real": 0.5, "distilled": 0.5})
    assert not outcome.passed and "not_built" in outcome.details["arms"]["distilled"]
    assert outcome.details["missing"] == []  # recorded as not built, not absent from the report
    # Without a floor a not-built arm does not fail the check; it is named.
    unfloored = accuracy_floor(path, arms, {"real": 0.5})
    assert unfloored.passed and "not built: distilled" in unfloored.description


def test_class_sizes_and_noisy_classes_are_shown_beside_their_numbers(tmp_path: Path) -> None:
    metrics = _partial_metrics()
    small, large_gap = metrics["classes"][1], metrics["classes"][2]
    write_report(tmp_path, metrics, _grids())
    markdown = (tmp_path / "report.md").read_text()
    assert "## Real images per class" in markdown
    assert "Warning: imbalanced train split" in markdown and "(25.0x, more than 10x)" in markdown
    assert "fewer than 20 test images" in markdown
    small_cell = small.replace("|", "\\|")
    # Marked in the counts table and beside its per-class accuracy row, with the note.
    assert markdown.count(f"| {small_cell} † |") == 2
    assert markdown.count("† fewer than 20 test images: this class's per-class accuracy") == 2
    assert f"| {large_gap} † |" not in markdown  # small train, but 90 test images: not noise
    assert not class_sizes_outcome(metrics["data"]["class_counts"]).passed
