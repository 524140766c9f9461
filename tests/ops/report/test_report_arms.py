"""The report's layout of the arms: grouped table with Δ vs real, the architecture in the title,
what the spread covers, the arms' questions and label precision, the scaling section, and the
cost table kept out of report.md; plus the arm registry those build on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthfactory.ops.evaluation.arms import ARMS, DEFAULT_ARMS, GROUPS, arm_order, check_arms
from synthfactory.ops.evaluation.comparisons import ArmCorrectness, compare
from synthfactory.ops.evaluation.cost import AssetCost, cost_summary
from synthfactory.ops.evaluation.scaling import scaling_evidence
from synthfactory.ops.report.cost import cost_section
from synthfactory.ops.report.document import write_report
from synthfactory.ops.report.tables import arm_table
from synthfactory.params.evaluation import DEFAULT_ARMS as PARAMS_DEFAULT_ARMS
from tests.ops.report.test_report import _grids, _metrics

ALL = ("mixed", "distilled", "synthetic", "real", "filtered", "retrieved", "zero_shot")


def _full_metrics() -> dict:
    """Metrics as eval_report writes them: groups and order from the registry."""
    metrics = _metrics(arms=ALL)
    metrics["arm_order"] = arm_order(list(ALL))
    for name, row in metrics["arms"].items():
        row["val_accuracy_mean"] = 0.5
        row["group"] = GROUPS[ARMS[name].group]
    metrics["arms"]["retrieved"] |= {
        "label_precision": {"overall": 0.875, "labelled": 8, "per_class": {}},
        "retrieval": {"pool": "real train split (labels hidden)", "query": "prototypes",
                      "per_class": 4, "pool_size": 20, "shortfall": {}}}
    metrics["classifier"] = {"architecture": "resnet18", "batch_size": 128}
    metrics["spread"] = "sample standard deviation (ddof 1) over the classifier seeds only"
    generator = np.random.default_rng(0)

    def curve(name: str, scale: float, replicate: str) -> list[tuple[float, ArmCorrectness]]:
        """Correctness (1 replicate × 3 seeds × 400 images) of a power law at 6 sizes."""
        return [(n, ArmCorrectness(f"{name}@{n:g}", generator.random((1, 3, 400)) <
                                   1 - scale * n ** -0.5, (replicate,)))
                for n in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)]

    metrics["scaling"] = scaling_evidence(curve("filtered", 0.5, "r0"), curve("real", 0.3, "real"),
                                          draws=200, seed=0)
    synthetic, real = (ArmCorrectness(name, generator.random((1, 3, 400)) < p, (replicate,))
                       for name, p, replicate in (("synthetic", 0.7, "r0"), ("real", 0.6, "real")))
    metrics["comparisons"] = [{"kind": "arm", **compare(synthetic, real, draws=200, seed=0)}]
    return metrics


def test_the_registry_groups_every_arm_and_params_default_to_it() -> None:
    assert all(arm.group in GROUPS for arm in ARMS.values())
    assert list(PARAMS_DEFAULT_ARMS) == list(DEFAULT_ARMS)
    assert set(DEFAULT_ARMS) <= set(ARMS) and "zero_shot" not in DEFAULT_ARMS
    assert arm_order(list(ALL)) == ["real", "zero_shot", "retrieved", "synthetic", "filtered",
                                    "distilled", "mixed"]
    assert arm_order(["mixed", "refined", "real"]) == ["real", "refined", "mixed"]
    assert arm_order(["mixed", "someday", "real"]) == ["real", "mixed", "someday"]  # unknown last
    assert check_arms(["mixed", "real"], judge_backend="convnet") == ["real", "mixed"]
    with pytest.raises(ValueError, match=r"\['nope'\] are not arms"):
        check_arms(["real", "nope"], judge_backend="convnet")


def test_the_arm_table_is_grouped_with_the_difference_to_real() -> None:
    header, rows = arm_table(_full_metrics())
    assert header[:2] == ["group", "arm"] and "Δ vs real" in header and "val accuracy" in header
    assert [row[1] for row in rows] == ["real", "zero_shot", "retrieved", "synthetic", "filtered",
                                        "distilled", "mixed"]
    # The group is named once, on its first arm.
    assert [row[0] for row in rows] == ["references", "", "", "synthetic", "", "", "combined"]
    delta = header.index("Δ vs real")
    assert rows[0][delta] == "" and rows[3][delta] == "+0.1000"  # synthetic 0.7 vs real 0.6


def test_report_names_the_architecture_the_spread_the_questions_and_the_scaling(
        tmp_path: Path) -> None:
    metrics = _full_metrics()
    cost = cost_summary([AssetCost("generator", 12.5), AssetCost("classifier_real", 2.0, 600,
                                                                 "training samples")],
                        device="cuda:0", gpus=1)
    write_report(tmp_path, metrics, _grids(), html_only=[cost_section(cost)])
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# synthfactory evaluation: digits (resnet18)")
    # It opens with the verdicts: the paired difference, its interval and the forest plot.
    opening = markdown.split("\n## ")[0]
    assert "synthetic − real" in opening and "better" in opening and "verdicts.png" in opening
    assert (tmp_path / "verdicts.png").stat().st_size > 1000
    assert "± is the sample standard deviation (ddof 1) over the classifier seeds only" in markdown
    assert "label precision 0.875" in markdown
    assert ARMS["mixed"].question in markdown
    assert "## Scaling" in markdown and "Exchange rate:" in markdown
    assert "residual degrees of freedom" in markdown  # 6 sizes: a fit with 3 residual dof
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert json.loads((tmp_path / "metrics.json").read_text())["scaling"]["fit"]
    # Wall times: in the HTML (with GPU-hours on CUDA), only a pointer in the markdown.
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Cost</h2>" in page and "GPU-hours" in page and "0.0035" in page
    assert "12.5" not in markdown and "## Cost" in markdown
    assert cost["total_seconds"] == 14.5 and cost["assets"][1]["images_per_second"] == 300.0


def test_what_the_intervals_leave_out_names_the_comparisons_it_applies_to() -> None:
    """With replicates, only the one-draw arms (distilled, retrieved) leave the replicates out:
    the report says so for those comparisons, not for every verdict; an item that applies to
    every comparison is said once, without a list."""
    from synthfactory.ops.report.verdicts import not_covered_text

    weights = "the generator's weights (shared by every replicate)"
    one_draw = "replicates: one draw of everything upstream of the classifiers"
    comparisons = [{"a": "synthetic", "b": "real", "not_covered": [weights]},
                   {"a": "distilled", "b": "real", "not_covered": [one_draw, weights]},
                   {"a": "retrieved", "b": "real", "not_covered": [one_draw, weights]}]
    text = not_covered_text(comparisons)
    assert text == (f"{one_draw} (for distilled − real, retrieved − real); {weights}")
