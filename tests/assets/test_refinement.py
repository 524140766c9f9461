"""The refinement loop in the graph: two rounds of the 2×2 on the tiny config, through Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.shards import finished_shards, read_samples
from synthfactory.params import parse_params
from synthfactory.planning import PlanResult, materialize_plan
from tests.support import tiny_params

BUDGET = 20
ARMS = ("refined", "targeted_base", "uniform_plan", "uniform")


def _materialize(root: Path) -> PlanResult:
    config = parse_params(tiny_params(root, refinement={"rounds": 2, "budget": BUDGET}))
    return materialize_plan(build_definitions(config), raise_on_error=False)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loop")
    assert _materialize(root).success
    return root


def test_two_rounds_run_in_order_and_the_report_names_the_result(loop_run: Path) -> None:
    data = loop_run / "data"
    metrics = json.loads((loop_run / "reports" / "eval" / "metrics.json").read_text())
    synthetic = metrics["arms"]["synthetic"]["n_train"]
    # Equal cost: every arm of the 2×2 adds the budget per round to the same synthetic set.
    for arm in ARMS:
        assert metrics["arms"][arm]["n_train"] == synthetic + 2 * BUDGET
        assert "val_accuracy_mean" in metrics["arms"][arm]
        # Equal compute within the 2×2, and each arm's own interval.
        low, high = metrics["arms"][arm]["ci95"]
        assert low <= metrics["arms"][arm]["accuracy_mean"] <= high
    assert len({metrics["arms"][arm]["steps"] for arm in ARMS}) == 1
    assert metrics["arms"]["refined"]["steps"] is not None
    loop = metrics["refinement"]
    assert set(loop["cells"]) == set(ARMS)
    assert loop["cells"]["targeted_base"]["allocation"] == "targeted"
    assert loop["cells"]["uniform_plan"]["recipe"] == "plan"
    pairs = {(c["a"], c["b"]): c for c in loop["comparisons"]}
    # Targeting: targeted − uniform at the same recipe; the recipe: plan − base at the same
    # allocation; the interaction; and the original control, which changes both.
    assert {("refined", "uniform_plan"), ("targeted_base", "uniform"),
            ("refined", "targeted_base"), ("uniform_plan", "uniform"),
            ("refined", "uniform")} <= set(pairs)
    assert loop["comparisons"][-1]["effect"] == "interaction"
    for c in loop["comparisons"]:
        assert c["verdict"] in ("better", "worse", "indistinguishable")
        assert c["ci95"][0] <= c["ci95"][1] and "test images" in c["covers"]
    refined, uniform_plan = (loop["cells"][a]["accuracy_mean"] for a in ("refined", "uniform_plan"))
    assert pairs["refined", "uniform_plan"]["difference"] == pytest.approx(refined - uniform_plan,
                                                                           abs=1e-6)
    assert loop["targeting"].startswith("Targeting is")
    assert [r["round"] for r in loop["rounds"]] == [1, 2]
    assert loop["rounds"][0]["evaluated_arm"] == "classifier_synthetic"
    # Round 2 planned from round 1's refined classifier, read through the store.
    assert loop["rounds"][1]["evaluated_arm"] == "classifier_refined"
    assert loop["rounds"][1]["refined"]["n_train"] == metrics["arms"]["refined"]["n_train"]
    for r in loop["rounds"]:
        assert sum(r["allocation"].values()) == BUDGET
    worst = loop["worst_class"]
    assert worst["name"] in metrics["classes"] and worst["chosen_on"] == "val"
    assert {"before", "after", "uniform_after"} <= set(worst)
    report = (loop_run / "reports" / "eval" / "report.md").read_text()
    assert "Weak-class refinement" in report and "uniform_plan − uniform" in report
    assert loop["targeting"] in report
    prefixes = {"refined": "r", "targeted_base": "tb", "uniform_plan": "up", "uniform": "u"}
    for directory in ("refined_shards", "refined_shards_round2"):
        keys = set()
        for arm in ARMS:
            shards = finished_shards(data / directory, f"{arm}-*.tar")
            assert len(shards) == 3  # the synthetic shards' partition keys
            samples = list(read_samples(shards, decode=False))
            assert len(samples) == BUDGET
            assert all(s.key.startswith(prefixes[arm]) for s in samples)
            keys |= {s.key for s in samples}
        assert len(keys) == 4 * BUDGET
    plan = json.loads((data / "refinement_plan_round2" / "plan.json").read_text())
    assert plan["split"] == "val" and plan["round"] == 2


def test_the_plan_never_reads_the_test_split(loop_run: Path) -> None:
    """Guards "choices on validation only": with the test shards gone the plans still run,
    while eval_report (which must read test) fails on the same store."""
    data = loop_run / "data"
    for path in (data / "real_images").glob("test-*"):
        path.unlink()
    config = parse_params(tiny_params(loop_run, refinement={"rounds": 2, "budget": BUDGET}))
    defs = build_definitions(config)
    plans = [defs.get_assets_def(name) for name in ("refinement_plan", "refinement_plan_round2")]
    assert dg.materialize(plans, resources=defs.resources).success
    report = dg.materialize([defs.get_assets_def("eval_report")], resources=defs.resources,
                            raise_on_error=False)
    assert not report.success
