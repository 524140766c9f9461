"""An honest answer from imperfect inputs: a run that cannot build every arm still reports the
others (and says which are missing and why), and the leakage check finds copies of test images.

One tiny run through the real CLI whose filter leaves one image per class (top half, then every
image of a class is a near-duplicate of the first), so that the headline cell of `distilled_set`
(dm, ipc 2, from the filtered set) cannot be built, and with it the distilled arm. The later
tests work on copies of its store: a class emptied in the filter's manifest, and test images
planted among the synthetic shards.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from synthfactory.assets.checks import (
    distilled_set_size,
    eval_report_arms_built,
    eval_report_contamination,
    filtered_set_every_class_kept,
)
from synthfactory.cli import main
from synthfactory.ops.curation import FILTER_KEEP
from synthfactory.ops.curation.selection import read_keep_masks, write_keep_masks
from synthfactory.definitions import build_definitions
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.shards import Sample, read_samples, read_shard_info, write_shard
from synthfactory.params import Params, parse_params
from synthfactory.planning import materialize_plan
from synthfactory.resources.store import ArtifactStore
from tests.support import PROJECT_ROOT, tiny_params

# Every kept image of a class is a "duplicate" of the first (judge features are nonnegative, so
# any two have cosine ≥ 1e-6): one image per class survives, fewer than ipc 2.
DEGRADED = {"filtered_set": {"dedup_threshold": 1e-6}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The degraded run through `synthfactory run`: exit code, stdout, stderr, paths."""
    root = tmp_path_factory.mktemp("degraded")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(root, **DEGRADED)))
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))  # the run stays out of the project's instance
        patch.delenv("SYNTHFACTORY_PARAMS", raising=False)  # main sets it; undone on exit
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", "--params", str(params)])
        strict_out, strict_err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(strict_out), contextlib.redirect_stderr(strict_err):
            strict = main(["run", "--params", str(params), "--select", "eval_report", "--strict"])
    return {"root": root, "code": code, "out": out.getvalue(), "err": err.getvalue(),
            "strict": strict, "strict_err": strict_err.getvalue(),
            "report": root / "reports" / "eval", "data": root / "data"}


def _metrics(report: Path) -> dict[str, Any]:
    return json.loads((report / "metrics.json").read_text())


def test_the_report_is_made_from_the_arms_that_were_built(run: dict[str, Any]) -> None:
    assert run["code"] == 0, run["err"][-2000:]
    metrics = _metrics(run["report"])
    assert sorted(metrics["arms"]) == ["filtered", "mixed", "real", "retrieved", "synthetic"]
    reason = metrics["missing_arms"]["distilled"]
    assert list(metrics["missing_arms"]) == ["distilled"]
    assert reason.startswith("distilled_set was not built: cell dm-ipc2-filtered: class ")
    assert "fewer than ipc = 2: lower distilled_set.ipcs or use a larger source" in reason
    assert list(metrics["distillation"]["not_built"]) == ["dm-ipc2-filtered"]
    # Near-duplicates by thumbnail correlation: one image per class survives, or two where
    # a pair of its images anti-correlates; some class has fewer than ipc 2 either way.
    assert metrics["distillation_table"] == [] and 10 <= metrics["arms"]["filtered"]["n_train"] < 20
    markdown = (run["report"] / "report.md").read_text()
    assert "## Arms not built" in markdown and f"| distilled | {reason} |" in markdown
    assert "| dm-ipc2-filtered | class " in markdown  # the distillation table's cells not built
    assert (run["report"] / "report.html").is_file()
    # With one filtered image per class every fraction is the same set: no curve, and the report
    # says why; where a class kept two, the fractions differ and the curve is drawn.
    if metrics["arms"]["filtered"]["n_train"] == 10:
        assert metrics["scaling"]["not_built"].startswith(
            "every fraction [0.1, 0.3, 1.0] of the filtered set gives 1 images per class")
        assert "No scaling curve: every fraction" in markdown
    else:
        sizes = [point["images_per_class"] for point in metrics["scaling"]["points"]]
        assert len(set(sizes)) > 1 and "not_built" not in metrics["scaling"], metrics["scaling"]
    for asset in ("distilled_set", "classifier_distilled"):
        record = json.loads((run["data"] / asset / "not_built.json").read_text())
        assert record["built"] is False and record["asset"] == asset


def test_the_cli_warns_once_per_missing_arm_and_strict_exits_1(run: dict[str, Any]) -> None:
    warnings = [line for line in run["err"].splitlines()
                if line.startswith("synthfactory: warning:")]
    # One line for the missing arm; the failed non-blocking checks (the distilled set's size,
    # the report's arms built, …) have warning lines of their own, each naming its check.
    arm_lines = [line for line in warnings if not line.startswith("synthfactory: warning: check ")]
    assert len(arm_lines) == 1 and "arm 'distilled' was not built: distilled_set was not built" \
        in arm_lines[0]
    assert any("check eval_report_arms_built" in line for line in warnings), warnings
    assert "synthfactory: error" not in run["err"] and "Traceback" not in run["err"]
    assert re.search(r"^distilled +- +not built +-$", run["out"], re.MULTILINE)
    assert run["strict"] == 1
    assert "synthfactory: error: --strict: 1 arm(s) not built (distilled)" in run["strict_err"]


def test_the_default_leakage_check_reports_its_count_when_zero(run: dict[str, Any]) -> None:
    entry = _metrics(run["report"])["contamination"]
    assert entry["count"] == 0 and set(entry["per_class"].values()) == {0}
    assert entry["threshold"] == {"feature": 0.95, "pixel": 0.995}
    assert entry["n_synthetic"] == 60 and entry["real_val_baseline"]["count"] == 0
    assert "0 of 60 synthetic images are near-copies" in (run["report"] / "report.md").read_text()
    assert "near-copies of real test images: 0 of 60 synthetic images" in run["out"]


def test_the_checks_flag_the_missing_arm_without_blocking(run: dict[str, Any]) -> None:
    store = ArtifactStore(root=str(run["data"]))
    params = Params(eval_report={"output_dir": str(run["report"])})
    built = eval_report_arms_built(params=params)
    assert not built.passed and built.severity == dg.AssetCheckSeverity.WARN
    assert "arm 'distilled' was not built" in built.description
    # The check reads the cells of the run's own table (each cell is a partition).
    ran = parse_params(yaml.safe_load((run["root"] / "params.yaml").read_text())).params
    size = distilled_set_size(params=ran, store=store)
    assert not size.passed and size.severity == dg.AssetCheckSeverity.WARN
    assert size.description.startswith("not built: cell dm-ipc2-filtered: class ")
    assert filtered_set_every_class_kept(store=store).passed  # one image of each class is left
    assert eval_report_contamination(params=params).passed


def _copy(run: dict[str, Any], tmp_path: Path, **overrides: Any) -> tuple[dg.Definitions, Path]:
    shutil.copytree(run["data"], tmp_path / "data")
    config = parse_params(tiny_params(tmp_path, **{**DEGRADED, **overrides}))
    return build_definitions(config), tmp_path / "reports" / "eval"


def _materialize(defs: dg.Definitions, *names: str) -> None:
    """`names` in the planner's runs (the distillation cells are partitions of their own)."""
    result = materialize_plan(defs, list(names), checks=False)
    assert result.success


def test_a_class_emptied_by_the_filter_leaves_out_the_arms_that_need_it(
        run: dict[str, Any], tmp_path: Path) -> None:
    """Both paths of `classifier_<arm>` degrade: the filtered arm (a shard set, streamed) and
    the retrieved arm (assembled in memory) each lose class '3' and are recorded as not built;
    the mixed arm still has class '3' from its real images and is measured; the scaling curve
    follows the filtered arm."""
    defs, report = _copy(run, tmp_path, distilled_set={"methods": ["random"]})
    directory = tmp_path / "data" / "filtered_set"
    records = [json.loads(line) for line in (directory / "manifest.jsonl").read_text().splitlines()]
    for record in records:  # the filter rejects every image of class '3'
        if record["class_name"] == "3":
            record["keep"], record["reasons"] = False, ["low_confidence"]
    (directory / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # The classifiers stream through the per-shard keep masks: clear class '3' there as well
    # (records are in shard order, so a record's position in its shard is its mask index).
    masks = read_keep_masks(directory / FILTER_KEEP)
    position: dict[str, int] = {}
    for record in records:
        index = position[record["shard"]] = position.get(record["shard"], -1) + 1
        if record["class_name"] == "3":
            masks[record["shard"]][index] = 0
    write_keep_masks(directory / FILTER_KEEP, iter(masks.items()))
    summary = json.loads((directory / SUMMARY_JSON).read_text())
    summary["per_class"]["3"]["kept"] = 0
    (directory / SUMMARY_JSON).write_text(json.dumps(summary))
    retrieved = tmp_path / "data" / "retrieved_set" / "retrieved-00000.tar"
    write_shard(retrieved, [s for s in read_samples([retrieved]) if s.label != 3])
    _materialize(defs, "classifier_filtered", "classifier_retrieved", "classifier_mixed",
                 "distilled_set", "classifier_distilled", "eval_report")
    metrics = _metrics(report)
    assert sorted(metrics["arms"]) == ["mixed", "real", "synthetic"]
    assert metrics["missing_arms"]["retrieved"] == (
        "the retrieved arm has no image of class(es) '3': point retrieval.pool at images of "
        "every class")
    assert metrics["scaling"] == {"not_built": "the filtered arm was not built: "
                                  + metrics["missing_arms"]["filtered"]}
    assert metrics["missing_arms"]["filtered"] == (
        "the filtered arm has no image of class(es) '3': loosen filtered_set thresholds or "
        "raise prompts.images_per_class")
    assert metrics["missing_arms"]["distilled"] == (
        "distilled_set was not built: cell random-ipc2-filtered: the filtered set has no image "
        "of class(es) '3': loosen filtered_set thresholds or raise prompts.images_per_class")
    check = filtered_set_every_class_kept(store=ArtifactStore(root=str(tmp_path / "data")))
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def _plant(data: Path, count: int) -> dict[str, str]:
    """Replace `count` samples of shard 00001 by real test images (keys and labels kept): the
    copies a generator trained on the test set could hand back. Returns synthetic → test key."""
    test_images, _, test_keys = read_split(data / "real_images", "test")
    tar = data / "synthetic_shards" / "shard-00001.tar"
    info = read_shard_info(tar)
    samples = list(read_samples([tar]))
    planted = {}
    for position in range(count):
        source = 40 * position + 7
        sample = samples[3 * position]
        samples[3 * position] = Sample(sample.key, test_images[source], sample.label, sample.meta)
        planted[sample.key] = test_keys[source]
    write_shard(tar, samples, extra=info.extra)
    return planted


def test_planted_copies_of_test_images_are_all_found(run: dict[str, Any], tmp_path: Path) -> None:
    defs, report = _copy(run, tmp_path)
    planted = _plant(tmp_path / "data", 4)
    _materialize(defs, "eval_report")
    entry = _metrics(report)["contamination"]
    assert entry["count"] == 4
    assert {row["key"]: row["test_key"] for row in entry["near_copies"]} == planted
    assert entry["grid"]["shows"] == "near-copies" and len(entry["grid"]["rows"]) == 4
    assert sum(entry["per_class"].values()) == 4
    assert "4 of 60 synthetic images are near-copies" in (report / "report.md").read_text()
    assert (report / "contamination.png").is_file()
    check = eval_report_contamination(params=Params(eval_report={"output_dir": str(report)}))
    assert not check.passed and "4 of 60 synthetic images" in check.description


def test_the_filter_drops_planted_copies_when_asked(run: dict[str, Any], tmp_path: Path) -> None:
    defs, _ = _copy(run, tmp_path, filtered_set={**DEGRADED["filtered_set"],
                                                 "drop_test_near_duplicates": True})
    planted = _plant(tmp_path / "data", 2)
    # The planted shard's bytes changed: score it again, then filter from the scores.
    result = dg.materialize(list(defs.assets), selection=["shard_scores"], partition_key="00001",
                            resources=defs.resources)
    assert result.success
    _materialize(defs, "filtered_set")
    lines = (tmp_path / "data" / "filtered_set" / "manifest.jsonl").read_text().splitlines()
    records = {record["key"]: record for record in map(json.loads, lines)}
    dropped = {key: r["test_near_duplicate"]["test_key"] for key, r in records.items()
               if "test_near_duplicate" in r["reasons"]}
    assert dropped == planted and not any(records[key]["keep"] for key in planted)
