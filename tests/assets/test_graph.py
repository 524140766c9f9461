"""The whole graph end to end on a tiny config: every asset materializes and the report is whole."""

from __future__ import annotations

import json
import runpy
import shutil
import statistics
import sys
from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml

from synthfactory.assets.checks import (
    ASSET_CHECKS,
    distilled_set_size,
    eval_report_accuracy_floor,
    synthetic_shards_class_balance,
    synthetic_shards_integrity,
)
from synthfactory.cli import main
from synthfactory.definitions import build_definitions
from synthfactory.ops.distillation.export import load_export
from synthfactory.ops.training.train import load_classifier
from synthfactory.ops.storage.shards import (finished_shards, read_samples, read_shard_info,
                                              write_shard)
from synthfactory.params import Params, parse_params
from synthfactory.planning import PlanResult, materialize_plan
from synthfactory.resources.store import ArtifactStore
from tests.support import PROJECT_ROOT, tiny_params

ARMS = ["real", "retrieved", "synthetic", "filtered", "distilled", "mixed"]
FLOORS = {"real": 0.0, "synthetic": 1.0}


def _run_all(root: Path, **overrides: dict) -> PlanResult:
    """Every asset and check, all partitions, in the runs the planner orders (one per partitions
    definition: shards, then the distillation cell, then the report)."""
    config = parse_params(tiny_params(root, **overrides))
    return materialize_plan(build_definitions(config))


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PlanResult]:
    root = tmp_path_factory.mktemp("graph")
    # Floors the tiny run meets (real ≥ 0) and cannot meet (synthetic = 1.0): the report's check
    # must tell them apart.
    result = _run_all(root, eval_report={"accuracy_floor": FLOORS}, replicates=2)
    assert result.success
    return root, result


def test_metrics_json_has_the_documented_shape(graph_run: tuple[Path, PlanResult]
                                               ) -> None:
    root, _ = graph_run
    metrics = json.loads((root / "reports" / "eval" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits"
    assert metrics["classes"] == [str(d) for d in range(10)]
    assert sorted(metrics["arms"]) == sorted(ARMS)
    for arm in ARMS:
        row = metrics["arms"][arm]
        assert isinstance(row["n_train"], int) and row["n_train"] > 0
        # Each seed's accuracy is a count of the n_test images; the mean and the sample std are
        # of those (computed here with the standard library, not the code's mean_std).
        for value in row["accuracies"]:
            assert abs(value * metrics["n_test"] - round(value * metrics["n_test"])) < 1e-6
        assert row["accuracy_mean"] == pytest.approx(statistics.mean(row["accuracies"]))
        assert row["accuracy_std"] == pytest.approx(statistics.stdev(row["accuracies"]))
        assert row["seeds"] == 2 and len(row["per_class_accuracy"]) == 10
    # What the generator made, against the images it learned from (the real train split):
    # every metric overall and per class in the judge's space, and the copies among them.
    quality, memorized = metrics["generation_quality"], metrics["memorization"]
    assert quality["n_generated"] == 60 and quality["n_real"] == metrics["arms"]["real"]["n_train"]
    assert quality["encoder"].startswith("judge") and set(quality["per_class"]) == set(
        metrics["classes"])
    assert quality["overall"]["fd"] >= 0 and 0 <= quality["overall"]["precision"] <= 1
    assert memorized["n"] == 60 and 0 <= memorized["rate"] <= 1 and memorized["fpr"] == 0.01
    assert set(memorized["per_class"]) == set(metrics["classes"])
    robust = metrics["contamination"]["edit_robust"]  # near-copies of test images, under edits
    assert robust["n"] == 60 and robust["expected_by_chance"] == 0.6 and 0 <= robust["count"]
    assert memorized["closest_pairs"][0]["similarity"] >= memorized["closest_pairs"][-1][
        "similarity"] and "train_key" in memorized["closest_pairs"][0]
    # replicates: 2 — the arms trained on generated images pool both replicates' classifiers
    # (r1 re-drew the prompts' seeds, shards, scores, filter and classifier seeds); the
    # others are one draw.
    assert metrics["replicates"]["asked"] == 2 and metrics["replicates"]["missing"] == {}
    for arm in ("synthetic", "filtered", "mixed"):
        row = metrics["arms"][arm]
        assert row["replicates"] == ["r0", "r1"] and row["classifiers"] == 4
        assert len(row["accuracies"]) == 4 and set(row["n_train_by_replicate"]) == {"r0", "r1"}
    assert all("replicates" not in metrics["arms"][arm] for arm in ("real", "retrieved"))
    assert metrics["arms"]["synthetic"]["n_train_by_replicate"] == {"r0": 60, "r1": 60}
    assert metrics["arms"]["distilled"]["n_train"] == 20  # ipc 2 × 10 classes
    for arm in ARMS:  # what choices read: the validation split, never test
        assert 0.0 <= metrics["arms"][arm]["val_accuracy_mean"] <= 1.0
    # mixed = the real train split + the filtered synthetic set; retrieved = 6 per class (as
    # many as the synthetic arm) from the train split with hidden labels.
    assert metrics["arms"]["mixed"]["n_train"] == (metrics["arms"]["real"]["n_train"]
                                                   + metrics["arms"]["filtered"]["n_train"])
    retrieved = metrics["arms"]["retrieved"]
    assert retrieved["n_train"] == 60 and retrieved["retrieval"]["per_class"] == 6
    assert 0.0 <= retrieved["label_precision"]["overall"] <= 1.0
    # The train-split pool less its labelled part (10 per class), which alone taught the ranking.
    labelled = retrieved["retrieval"]["labelled"]
    assert labelled["size"] == 100 and labelled["excluded_from_pool"] is True
    assert retrieved["retrieval"]["pool_size"] == metrics["arms"]["real"]["n_train"] - 100
    scaling = metrics["scaling"]
    # Three sizes per curve: points with intervals, but no power law (it needs 2 residual
    # degrees of freedom, i.e. 5 sizes), so the exchange rate interpolates the real curve.
    assert len(scaling["points"]) == 3 and len(scaling["real_curve"]["points"]) == 3
    assert scaling["fit"] is None and "5 sizes" in scaling["no_fit"]
    assert all(p["ci95"][0] <= p["accuracy"] <= p["ci95"][1] for p in scaling["points"])
    assert "test images" in scaling["covers"] and scaling["exchange_rate"]["how"]
    # 1.0 is the filtered arm itself (same data, same seeds): not trained twice. The curve's
    # subsets are drawn from replicate r0's filtered set, so its point is r0's seeds.
    filtered = metrics["arms"]["filtered"]
    assert scaling["points"][-1]["accuracy"] == pytest.approx(
        statistics.mean(filtered["accuracies"][:filtered["seeds"]]), abs=1e-6)
    # Equal compute: every compared arm trained the same steps (the distilled arm follows the
    # distillation protocol), and each arm has a 95% interval.
    steps = {arm: metrics["arms"][arm]["steps"] for arm in ARMS if arm != "distilled"}
    assert len(set(steps.values())) == 1 and metrics["budget"]["steps"] == list(set(steps.values()))
    assert all(metrics["arms"][arm]["ci95"][0] <= metrics["arms"][arm]["accuracy_mean"]
               <= metrics["arms"][arm]["ci95"][1] for arm in ARMS)
    # The comparisons the report makes: every arm vs real, filtered vs synthetic, each with an
    # interval and a verdict.
    pairs = {(c["a"], c["b"]) for c in metrics["comparisons"]}
    assert {(arm, "real") for arm in ARMS if arm != "real"} | {("filtered", "synthetic")} <= pairs
    assert all(c["verdict"] in {"better", "worse", "indistinguishable"}
               and c["ci95"][0] <= c["difference"] <= c["ci95"][1]
               for c in metrics["comparisons"])
    assert metrics["classifier"]["architecture"] == "convnet" and "ddof 1" in metrics["spread"]
    assert metrics["classifier"]["width"] == 16  # the tiny params' classifiers.width
    assert metrics["distillation"]["method"] == "dm" and metrics["distillation"]["ipc"] == 2
    [row] = metrics["distillation_table"]
    assert {key: row[key] for key in ("method", "ipc", "source", "architecture", "n_models")} == {
        "method": "dm", "ipc": 2, "source": "filtered", "architecture": "convnet",
        "n_models": 2}
    assert 0.0 <= row["accuracy_mean"] <= 1.0 and row["seconds"] > 0
    records = [json.loads(line) for line in
               (root / "data" / "filtered_set" / "manifest.jsonl").read_text().splitlines()]
    assert metrics["filter"]["total"] == 60
    assert metrics["filter"]["kept"] == sum(r["keep"] for r in records) > 0
    assert metrics["missing_arms"] == {}  # every arm built
    contamination = metrics["contamination"]
    assert contamination["count"] == 0 and contamination["n_synthetic"] == 60
    assert set(contamination["per_class"]) == set(metrics["classes"])
    assert metrics["data"]["class_counts"]["test"]["0"] > 20 and metrics["data"]["warnings"] == []
    lineage = metrics["lineage"]
    assert len(lineage["generator_digest"]) == 64 and lineage["params_digest"]
    assert sorted(lineage["shard_digests"]) == ["shard-00000.tar", "shard-00001.tar",
                                                "shard-00002.tar"]


def test_report_files_and_metadata(graph_run: tuple[Path, PlanResult]) -> None:
    root, result = graph_run
    report = root / "reports" / "eval"
    for name in ["report.md", "report.html", "accuracy.png", "grid_kept.png",
                 "grid_rejected.png", "grid_distilled.png", "confusion_real.png",
                 "scaling.png", "grid_retrieved.png", "cost.json", "memorization.png"]:
        assert (report / name).is_file(), name
    html = (report / "report.html").read_text()
    assert "What the generator made: quality, diversity, copies" in html
    assert "data:image/png;base64," in html and 'src="http' not in html
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    assert set(events) >= {f"classifier_{arm}" for arm in ARMS} | {"eval_report", "judge"}
    assert "| real |" in events["eval_report"]["arms"].value
    assert "data:image/png;base64," in events["eval_report"]["accuracy_plot"].value
    # The judge's agreement: the share of samples it predicts as their prompt's class.
    records = [json.loads(line) for line in
               (root / "data" / "filtered_set" / "manifest.jsonl").read_text().splitlines()]
    agreement = sum(r["predicted"] == r["label"] for r in records) / len(records)
    assert events["filtered_set"]["judge_agreement"].value == pytest.approx(agreement, abs=1e-4)
    assert events["filtered_set"]["shards_used"].value == 3


def test_classifier_checkpoints_are_safetensors(graph_run: tuple[Path, PlanResult]
                                                ) -> None:
    root, _ = graph_run
    for arm in ARMS:
        directory = root / "data" / f"classifier_{arm}"
        assert sorted(p.name for p in directory.glob("seed-*")) == [
            "seed-0.safetensors", "seed-1.safetensors"]
        history = json.loads((directory / "history.json").read_text())
        assert history["arm"] == arm and len(history["seeds"]) == 2


def test_filtered_manifest_explains_every_sample(graph_run: tuple[Path, PlanResult]
                                                 ) -> None:
    root, _ = graph_run
    lines = (root / "data" / "filtered_set" / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 60
    for record in records:
        assert record["keep"] == (record["reasons"] == [])
        assert record["shard"].startswith("shard-") and 0.0 <= record["confidence"] <= 1.0


def test_soft_labels_and_selection_methods_flow_to_the_distilled_arm(tmp_path: Path) -> None:
    """Soft labels from the judge reach the distilled arm; every soft-label set also trains its
    hard-label control, and DD-Ranking's soft-label mode scores HLR from it (the whole source
    keeps its hard labels)."""
    result = _run_all(tmp_path, distilled_set={"methods": ["herding", "random", "whole"],
                                               "labels": "soft", "ipcs": [2],
                                               "sources": ["real"], "eval_models": 2})
    assert result.success
    shards = finished_shards(tmp_path / "data" / "distilled_set")
    samples = list(read_samples(shards))
    assert len(samples) == 20
    assert all(abs(sum(s.meta["soft_label"]) - 1.0) < 1e-3 for s in samples)
    history = json.loads((tmp_path / "data" / "classifier_distilled" / "history.json").read_text())
    assert history["soft_labels"] is True
    cells = tmp_path / "data" / "classifier_distilled" / "cells"
    herding = json.loads((cells / "herding-ipc2-real" / "history.json").read_text())
    assert [row["labels"] for row in herding["architectures"]["convnet"]] == ["soft", "soft"]
    assert [row["labels"] for row in herding["hard_label_control"]["convnet"]] == [
        "hard control"] * 2
    assert "hard_label_control" not in json.loads(
        (cells / "whole-real" / "history.json").read_text())
    metrics = json.loads((tmp_path / "reports" / "eval" / "metrics.json").read_text())
    rows = {row["method"]: row for row in metrics["distillation_table"]}
    control = rows["herding"]["hard_label_control"]
    assert control["n_models"] == 2 and rows["whole"]["hard_label_control"] is None
    scores = rows["herding"]["dd_ranking"]
    assert scores["mode"] == "soft" and scores["missing"] == []
    assert scores["ior"] == pytest.approx(rows["herding"]["accuracy_mean"]
                                          - rows["random"]["accuracy_mean"])
    assert scores["hlr"] == pytest.approx(rows["whole"]["accuracy_mean"]
                                          - control["accuracy_mean"])


def test_the_whole_dataset_row_and_dd_ranking_reach_the_report(tmp_path: Path) -> None:
    """A table with random, dm and the whole real source through the whole graph: the whole
    cell holds every real train image, its networks train by the same protocol, and the dm row
    carries IOR / HLR / LRS against those two rows; the report prints them and the protocol."""
    table = {"methods": ["dm", "random", "whole"], "ipcs": [1], "sources": ["real"],
             "eval_models": 2, "eval": {"epochs": 2, "width": 16}}
    assert _run_all(tmp_path, distilled_set=table).success
    metrics = json.loads((tmp_path / "reports" / "eval" / "metrics.json").read_text())
    rows = {row["method"]: row for row in metrics["distillation_table"]}
    train_images = sum(metrics["data"]["class_counts"]["train"].values())
    assert rows["whole"]["ipc"] == 0 and rows["whole"]["n_images"] == train_images
    assert rows["whole"]["repeats"] == 1 and rows["whole"]["n_models"] == 2
    assert rows["dm"]["protocol"] == rows["whole"]["protocol"] == {
        "epochs": [2], "networks_per_repeat": 2, "learning_rates": [0.01],
        "learning_rate_source": ["eval.learning_rate"]}
    scores = rows["dm"]["dd_ranking"]
    assert scores["ior"] == pytest.approx(rows["dm"]["accuracy_mean"]
                                          - rows["random"]["accuracy_mean"])
    assert scores["hlr"] == pytest.approx(rows["whole"]["accuracy_mean"]
                                          - rows["dm"]["accuracy_mean"])
    assert 0.0 <= scores["lrs"] <= 1.0 and scores["missing"] == []
    # The whole set is compared with nothing: only dm against random gets a verdict.
    assert [c["a"] for c in metrics["comparisons"] if c["kind"] == "distillation"] == [
        "dm-ipc1-real"]
    report = (tmp_path / "reports" / "eval" / "report.md").read_text()
    assert f"The whole real source ({train_images} images), same protocol" in report
    assert "DD-Ranking (hard-label mode" in report and "| dm-ipc1-real | convnet |" in report
    assert "Protocol: 2 epochs, 2 networks per distilled repeat" in report
    low, high = rows["dm"]["ci95"]  # each cell with its interval in the per-source table
    assert (f"| dm | {rows['dm']['accuracy_mean']:.4f} ± {rows['dm']['accuracy_std']:.4f} "
            f"[{low:.4f}, {high:.4f}] |") in report


def test_every_asset_check_ran_and_the_gates_passed(
        graph_run: tuple[Path, PlanResult]) -> None:
    root, result = graph_run
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {key.name for check in ASSET_CHECKS for key in check.check_keys}
    assert len(evaluations) == 13
    for name in ["real_images_integrity", "synthetic_shards_integrity",
                 "synthetic_shards_class_balance", "filtered_set_every_class_kept",
                 "filtered_set_scores_current",
                 "distilled_set_size", "real_images_class_sizes", "eval_report_arms_built",
                 "eval_report_contamination"]:
        assert evaluations[name].passed, (name, evaluations[name].description)
    assert evaluations["synthetic_shards_integrity"].metadata["samples"].value == 60
    assert evaluations["distilled_set_size"].metadata["n_images"].value == 20
    # 6 images of class 0 asked for by the prompts (not counted from the shards), none missing.
    assert "| 0 | 6 | 6 | 0 | 0 |" in evaluations["synthetic_shards_class_balance"].metadata[
        "per_class_table"].value

    # The pass-rate floor (a warning) passed, and its lowest rate is the manifest's: kept/total
    # of the worst class, counted here from the per-sample records.
    records = [json.loads(line) for line in
               (root / "data" / "filtered_set" / "manifest.jsonl").read_text().splitlines()]
    rates = [sum(r["keep"] for r in records if r["label"] == c)
             / sum(r["label"] == c for r in records) for c in range(10)]
    floor = evaluations["filtered_set_pass_rate_floor"]
    assert floor.passed and floor.severity == dg.AssetCheckSeverity.WARN
    assert floor.metadata["lowest_pass_rate"].value == pytest.approx(min(rates), abs=1e-4)

    # Soundness: the tiny generator's ceiling (30 steps) came before a second held-out check, so
    # there is no trend to judge; the tiny classifiers (10 steps) did not fit their sets, and
    # the soundness check warns so, with each number and its bound.
    assert evaluations["generator_converged"].passed
    sound = evaluations["eval_report_soundness"]
    assert not sound.passed and sound.severity == dg.AssetCheckSeverity.WARN
    found = sound.metadata["warnings"].value
    assert any(w["kind"] == "underfit" and w["value"] < w["bound"] for w in found)
    history = json.loads((root / "data" / "classifier_real" / "history.json").read_text())
    assert history["control"]["steps"] == 2 * history["seeds"][0]["steps"]

    # The accuracy floor: its verdict is what metrics.json says of each floored arm, and its
    # rows cover every configured arm (those without a floor named as such).
    metrics = json.loads((root / "reports" / "eval" / "metrics.json").read_text())
    below = sorted(arm for arm, value in FLOORS.items()
                   if metrics["arms"][arm]["accuracy_mean"] < value)
    accuracy = evaluations["eval_report_accuracy_floor"]
    assert below == ["synthetic"] and accuracy.passed is False
    assert "below the accuracy floor" in accuracy.description and "synthetic" in \
        accuracy.description and "'real'" not in accuracy.description
    assert accuracy.metadata["arms"].value == {
        arm: {"accuracy": round(metrics["arms"][arm]["accuracy_mean"], 4),
              "floor": FLOORS.get(arm)} for arm in metrics["arm_order"]}
    assert sorted(metrics["arm_order"]) == sorted(ARMS)
    assert accuracy.metadata["no_floor"].value == [arm for arm in metrics["arm_order"]
                                                   if arm not in FLOORS]


def test_class_balance_fails_on_a_deleted_shard_and_on_lost_class_images(
        graph_run: tuple[Path, dg.ExecuteInProcessResult], tmp_path: Path) -> None:
    """Expected counts come from the prompts: a store that lost images fails, naming the class
    and how many are missing (the old check compared the shards with themselves and passed)."""
    import shutil

    root, _ = graph_run
    params = parse_params(tiny_params(root)).params
    copy = tmp_path / "data"
    shutil.copytree(root / "data", copy)
    store = ArtifactStore(root=str(copy))
    shards = copy / "synthetic_shards"

    def balance() -> dg.AssetCheckResult:
        # A fresh instance has no record of what was made: every shard is expected.
        return synthetic_shards_class_balance(dg.build_asset_check_context(), params=params,
                                              store=store)

    assert balance().passed
    # Class 0 taken out of shard 00000 (records 0, 10 and 20), rewritten with a consistent
    # sidecar: the integrity check cannot see it, the balance check must.
    tar = shards / "shard-00000.tar"
    extra = read_shard_info(tar).extra
    write_shard(tar, [s for s in read_samples([tar]) if s.label != 0], extra=extra)
    assert synthetic_shards_integrity(store=store).passed
    lost = balance()
    assert not lost.passed and "class 0: 3 missing" in lost.description
    table = lost.metadata["per_class_table"].value
    assert "| 0 | 3 | 6 | 0 | 3 |" in table and "| 0 | 6 | 6 |" not in table

    # A deleted shard: 00002 holds records 50–59, one image of every class.
    (shards / "shard-00002.tar").unlink()
    (shards / "shard-00002.json").unlink()
    gone = balance()
    assert not gone.passed and "shard(s) 00002 missing" in gone.description
    assert "class 0: 4 missing" in gone.description and "class 9: 1 missing" in gone.description


def test_checks_fail_on_a_corrupt_shard_and_a_low_accuracy(
        graph_run: tuple[Path, PlanResult], tmp_path: Path) -> None:
    import shutil

    root, _ = graph_run
    copy = tmp_path / "data"
    shutil.copytree(root / "data", copy)
    store = ArtifactStore(root=str(copy))
    tar = copy / "synthetic_shards" / "shard-00001.tar"
    tar.write_bytes(tar.read_bytes()[:-1024])  # truncated: a crashed copy, say
    result = synthetic_shards_integrity(store=store)
    assert not result.passed and "shard-00001.tar: sha256" in result.description

    table = Params(distilled_set={"methods": ["dm"], "ipcs": [2]})  # the tiny graph's one cell
    assert distilled_set_size(params=table, store=store).passed
    # A cell of the table not made yet is listed, not failed: a run may make one cell.
    wider = distilled_set_size(params=Params(distilled_set={"methods": ["dm", "random"],
                                                            "ipcs": [2]}), store=store)
    assert wider.passed and wider.metadata["missing"].value == ["random-ipc2-filtered"]
    (copy / "distilled_set" / "distilled-00000.json").unlink()  # the shard is no longer finished
    assert not distilled_set_size(params=table, store=store).passed

    report = str(root / "reports" / "eval")
    assert eval_report_accuracy_floor(params=Params(
        eval_report={"output_dir": report, "accuracy_floor": {"real": 0.0}})).passed
    low = eval_report_accuracy_floor(params=Params(
        eval_report={"output_dir": report, "accuracy_floor": {"real": 1.0, "synthetic": 1.0}}))
    assert not low.passed and "below the accuracy floor" in low.description
    # A report that lost a configured arm fails, though every floor it has is met.
    short = tmp_path / "report"
    metrics = json.loads((Path(report) / "metrics.json").read_text())
    del metrics["arms"]["mixed"]
    short.mkdir()
    (short / "metrics.json").write_text(json.dumps(metrics))
    lost = eval_report_accuracy_floor(params=Params(
        eval_report={"output_dir": str(short), "accuracy_floor": {"real": 0.0}}))
    assert not lost.passed and "missing from metrics.json: ['mixed']" in lost.description


def test_ui_metadata_has_grids_counts_timings_and_paths(
        graph_run: tuple[Path, PlanResult]) -> None:
    _, result = graph_run
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    shards = meta["synthetic_shards"]
    assert shards["sample_grid"].value.count("data:image/png;base64,") == 1
    assert "| 0 | 6 |" in shards["per_class"].value  # 6 images of class 0 over the 3 shards
    assert shards["images_per_second"].value > 0 and shards["seconds"].value > 0
    assert shards["generator_path"].value.endswith("generator")
    for key in ("kept_grid", "rejected_grid"):
        assert "data:image/png;base64," in meta["filtered_set"][key].value
    assert "data:image/png;base64," in meta["distilled_set"]["grid"].value
    assert "| 9 | 2 |" in meta["distilled_set"]["per_class"].value  # ipc 2


def test_cost_is_recorded_outside_metrics_and_report_md(
        graph_run: tuple[Path, dg.ExecuteInProcessResult]) -> None:
    """Seconds per asset come from the run's step records; they are in cost.json and
    report.html, and never in metrics.json or report.md (which must stay byte-identical)."""
    root, _ = graph_run
    report = root / "reports" / "eval"
    cost = json.loads((report / "cost.json").read_text())
    seconds = {row["asset"]: row["seconds"] for row in cost["assets"]}
    assert cost["device"] == "cpu" and cost["unrecorded"] == []
    assert all(value is not None and value >= 0 for value in seconds.values())
    # Every asset upstream of the report has its row, in graph order, the report's own last.
    upstream = {"real_images", "prompts", "generator", "synthetic_shards", "judge",
                "shard_scores", "filtered_set", "retrieved_set", "distilled_set",
                "classifier_real", "classifier_retrieved", "classifier_synthetic",
                "classifier_filtered", "classifier_distilled", "classifier_mixed",
                "classifier_scaling"}
    # Replicate r1's copies of the assets that hold a draw downstream of the generator.
    upstream |= {f"r1/{asset}" for asset in ("prompts", "synthetic_shards", "shard_scores",
                                              "filtered_set", "classifier_synthetic",
                                              "classifier_filtered", "classifier_mixed")}
    order = [row["asset"] for row in cost["assets"]]
    assert set(order) == upstream | {"eval_report"} and order[-1] == "eval_report"
    assert order.index("synthetic_shards") < order.index("shard_scores") < order.index(
        "filtered_set") < order.index("classifier_filtered")
    rates = {row["asset"]: row["images_per_second"] for row in cost["assets"]}
    assert rates["synthetic_shards"] > 0 and rates["classifier_real"] > 0
    assert rates["r1/synthetic_shards"] > 0 and rates["r1/classifier_mixed"] > 0
    # The one wall time metrics.json keeps: each distillation cell's (issue 14's table format).
    metrics = json.loads((report / "metrics.json").read_text())
    assert all(row.pop("seconds") > 0 for row in metrics["distillation_table"])
    assert "seconds" not in json.dumps(metrics)
    markdown, page = (report / "report.md").read_text(), (report / "report.html").read_text()
    assert "classifier_mixed" not in markdown and "In report.html only" in markdown
    assert "<h2>Cost</h2>" in page and "classifier_mixed" in page


def test_retrieval_reads_a_users_pool_and_measures_its_hidden_labels(
        graph_run: tuple[Path, dg.ExecuteInProcessResult], tmp_path: Path) -> None:
    """retrieval.pool: an image folder whose class folders are hidden labels; loose files have
    none; copies of real test images in it are dropped and counted before ranking. Only
    retrieved_set runs, on a copy of the graph's store."""
    import shutil

    from synthfactory.ops.data.real_images import read_split
    from tests.support import png_bytes

    root, _ = graph_run
    shutil.copytree(root / "data", tmp_path / "data")
    images, labels, _ = read_split(tmp_path / "data" / "real_images", "train")
    test_images, test_labels, _ = read_split(tmp_path / "data" / "real_images", "test")
    pool = tmp_path / "pool"
    for index in range(40):  # real train digits as a user's photos: 0-29 in class folders
        folder = pool / str(labels[index]) if index < 30 else pool
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.png").write_bytes(png_bytes(images[index][:, :, 0]))
    for index in range(3):  # and three test digits, which must not be trained on
        folder = pool / str(test_labels[index])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"test{index}.png").write_bytes(png_bytes(test_images[index][:, :, 0]))
    config = parse_params(tiny_params(tmp_path, retrieval={"pool": str(pool), "per_class": 2}))
    defs = build_definitions(config)
    result = dg.materialize([defs.get_assets_def("retrieved_set")], resources=defs.resources,
                            selection=["retrieved_set"])
    assert result.success
    summary = json.loads((tmp_path / "data" / "retrieved_set" / "summary.json").read_text())
    copies = summary["test_near_copies"]
    assert copies["checked"] == 43 and copies["dropped"] == 3
    assert sorted(row["pool_key"].split("/")[-1] for row in copies["listed"]) == [
        "test0.png", "test1.png", "test2.png"]
    assert summary["labelled"] is None and summary["query"] == (
        "mean judge embedding of the class's real training images")
    assert summary["pool"] == str(pool) and summary["pool_size"] == 40
    assert summary["pool_labelled"] == 30 and 0 < summary["n_images"] <= 20
    precision = summary["label_precision"]
    assert 0 < precision["labelled"] <= summary["n_images"] and 0 <= precision["overall"] <= 1


def test_a_replicate_redraws_everything_downstream_of_the_generator(
        graph_run: tuple[Path, PlanResult]) -> None:
    """r1 shares the real split, the generator and the judge with r0, and draws its own
    prompts' seeds, shards, scores, filter and classifiers (under data/r1/)."""
    root, _ = graph_run
    data = root / "data"
    seeds = {replicate: [json.loads(line)["seed"] for line in
                         (base / "prompts" / "prompts.jsonl").read_text().splitlines()]
             for replicate, base in (("r0", data), ("r1", data / "r1"))}
    assert len(seeds["r0"]) == len(seeds["r1"]) and not set(seeds["r0"]) & set(seeds["r1"])
    shard = "shard-00000.tar"
    assert ((data / "synthetic_shards" / shard).read_bytes()
            != (data / "r1" / "synthetic_shards" / shard).read_bytes())
    for shared in ("real_images", "generator", "judge", "classifier_real"):
        assert not (data / "r1" / shared).exists()
    metrics = json.loads((root / "reports" / "eval" / "metrics.json").read_text())
    by_pair = {(c["a"], c["b"]): c for c in metrics["comparisons"]}
    # The replicate axis is resampled where an arm has two replicates; filtered and synthetic
    # of one replicate share its draws (paired), real has none.
    for pair in (("synthetic", "real"), ("mixed", "real"), ("filtered", "synthetic")):
        assert "replicates" in by_pair[pair]["covers"], by_pair[pair]
    assert "replicates" not in by_pair[("retrieved", "real")]["covers"]
    assert "replicates" in metrics["spread"]


def test_a_replicate_is_remade_alone_from_the_cli(graph_run: tuple[Path, PlanResult],
                                                  tmp_path: Path) -> None:
    """`synthfactory run --select key:r1/<asset>` re-makes one replicate's asset alone (after a
    crash lost it), byte for byte, and nothing of r0 runs."""
    root, _ = graph_run
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(
        root, eval_report={"accuracy_floor": FLOORS}, replicates=2)))
    lost = root / "data" / "r1" / "classifier_mixed"
    before = {path.name: path.read_bytes() for path in lost.glob("seed-*.safetensors")}
    r0_mtime = (root / "data" / "classifier_mixed" / "history.json").stat().st_mtime_ns
    shutil.rmtree(lost)
    assert main(["run", "--params", str(params_file), "--select", "key:r1/classifier_mixed"]) == 0
    assert {path.name: path.read_bytes() for path in lost.glob("seed-*.safetensors")} == before
    assert (root / "data" / "classifier_mixed" / "history.json").stat().st_mtime_ns == r0_mtime
    # The headline cell exported with its card: the report's accuracy of it, with its interval.
    assert main(["export", "distilled_set", "--params", str(params_file), "--format", "npz",
                 str(tmp_path / "export")]) == 0
    exported = load_export(tmp_path / "export")
    metrics = json.loads((root / "reports" / "eval" / "metrics.json").read_text())
    row = metrics["distillation_table"][0]
    assert exported.card["measured_on_test"][0]["accuracy_mean"] == row["accuracy_mean"]
    assert exported.card["measured_on_test"][0]["ci95"] == row["ci95"]
    assert exported.images.shape == (20, 8, 8, 1) and exported.soft_labels is None


def test_the_guidance_sweep_chooses_on_validation_with_paired_intervals(
        graph_run: tuple[Path, PlanResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/guidance_sweep.py on the finished tiny store: every recipe scored on the
    validation split over two replicates, compared with the default by the paired bootstrap,
    and a choice with the rule that made it."""
    root, _ = graph_run
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(root)))
    monkeypatch.setattr(sys, "argv", ["guidance_sweep.py", "--params", str(params_file),
                                      "--recipes", "[1.0]", "[3.0]"])
    runpy.run_path(str(PROJECT_ROOT / "benchmarks" / "guidance_sweep.py"), run_name="__main__")
    out = capsys.readouterr().out
    result = json.loads(out[out.index('{\n'):])
    assert result["split"] == "val" and result["replicates"] == ["r0", "r1"]
    assert result["default"] == [1.0, 2.0]  # tiny params' mix, appended to the recipes asked
    assert [row["guidance"] for row in result["rows"]] == [[1.0], [3.0], [1.0, 2.0]]
    for row in result["rows"][:2]:
        versus = row["vs_default"]
        assert versus["verdict"] in {"better", "worse", "indistinguishable"}
        assert {"replicates", "classifier seeds", "test images"} <= set(versus["covers"])
    assert result["chosen"] in ([1.0], [3.0], [1.0, 2.0]) and result["rule"]


def test_what_predicts_value_sets_every_measure_beside_validation_accuracy(
        graph_run: tuple[Path, PlanResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/what_predicts_value.py on the tiny store: per setting and per (setting,
    class) every measure beside the validation accuracy, and their rank correlations."""
    root, _ = graph_run
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(root)))
    monkeypatch.setattr(sys, "argv", ["what_predicts_value.py", "--params", str(params_file),
                                      "--recipes", "[1.0]", "[3.0]", "--replicates", "1"])
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "benchmarks"))
    runpy.run_path(str(PROJECT_ROOT / "benchmarks" / "what_predicts_value.py"),
                   run_name="__main__")
    out = capsys.readouterr().out
    result = json.loads(out[out.index('{\n'):])
    assert [row["guidance"] for row in result["rows"]] == [[1.0], [3.0], [1.0, 2.0]]
    assert len(result["cells"]) == 3 * 10  # settings × classes
    for row in result["rows"]:
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["judge_agreement"] <= 1
        assert row["fd"] >= 0 and 0 <= row["memorization"] <= 1
    for measure, found in result["correlations"].items():
        assert found["across_settings"]["n"] == 3, measure
        assert found["across_classes_and_settings"]["n"] <= 30


def test_a_resolution_that_is_not_a_power_of_two_runs_end_to_end(tmp_path: Path) -> None:
    """A folder read at 12 px (as one read at MNIST's 28 or at 48 px): every asset and check
    runs — the generator's UNet, the ConvNets (their pools round down: 12 → 6 → 3), the
    distillation and the report — and the classifiers record the depth they took."""
    result = _run_all(tmp_path, real_images={"resolution": 12})
    assert result.success
    metrics = json.loads((tmp_path / "reports" / "eval" / "metrics.json").read_text())
    assert set(ARMS) <= set(metrics["arms"])
    weights = tmp_path / "data" / "classifier_real" / "seed-0.safetensors"
    model = load_classifier(weights, torch.device("cpu"))
    assert model.config["resolution"] == 12 and model.config["depth"] == 2
