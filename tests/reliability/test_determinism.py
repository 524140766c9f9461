"""Determinism: the same params and seed give byte-identical outputs at every stage.

The tiny graph is materialized twice, in two stores; the digests of the prompts, every shard
and sidecar, the generator, the judge, the filtered manifest, the distilled set, the classifier
checkpoints and metrics.json must all be equal (same machine, same torch version).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.params import parse_params
from synthfactory.planning import materialize_plan
from tests.support import tiny_params

# Files whose bytes are the data (summary/history files that record wall time are not).
COMPARED = ["data/prompts/prompts.jsonl", "data/synthetic_shards/*", "data/generator/*/*",
            "data/judge/judge.safetensors", "data/filtered_set/manifest.jsonl",
            "data/filtered_set/summary.json", "data/distilled_set/distilled-*",
            "data/distilled_set/cells/*/repeat-*",
            "data/classifier_*/*.safetensors", "data/classifier_distilled/cells/*/*/*",
            "data/real_images/*.tar", "data/real_images/manifest.json", "reports/eval/report.md"]


def _materialize_all(root: Path) -> dict[str, str]:
    # The same params file, run in two directories: paths are relative, as in params.yaml (the
    # lineage digest covers every section, output paths included).
    raw = tiny_params(root, runtime={"device": "cpu", "threads": 1})
    raw["store"] = {"root": "data"}
    raw["eval_report"] = {"output_dir": "reports/eval"}
    config = parse_params(raw)
    defs = build_definitions(config)
    before = Path.cwd()
    os.chdir(root)
    try:  # every asset, in the planner's runs (as `make run` does)
        result = materialize_plan(defs)
    finally:
        os.chdir(before)
    assert result.success
    found = {}
    for pattern in COMPARED:
        matches = sorted(p for p in root.glob(pattern) if p.is_file())
        assert matches, pattern
        found.update({p.relative_to(root).as_posix(): sha256_file(p) for p in matches})
    # metrics.json, less its one wall-time field: each distillation cell's `seconds`.
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    for row in metrics["distillation_table"]:
        assert row.pop("seconds") > 0
    found["metrics.json less seconds"] = json.dumps(metrics, sort_keys=True)
    # generator.json records the training time; its content digest of the weights must agree.
    found["generator digest"] = json.loads((root / "data/generator/generator.json").read_text())[
        "digest"]
    return found


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, str]]:
    return (_materialize_all(tmp_path_factory.mktemp("first")),
            _materialize_all(tmp_path_factory.mktemp("second")))


def test_every_stage_is_byte_identical(two_runs: tuple[dict[str, str], dict[str, str]]) -> None:
    first, second = two_runs
    assert sorted(first) == sorted(second)
    differing = sorted(name for name in first if first[name] != second[name])
    assert differing == [], differing


def test_the_comparison_covers_every_stage(two_runs: tuple[dict[str, str], dict[str, str]]) -> None:
    names = set(two_runs[0])
    for expected in ["data/prompts/prompts.jsonl", "data/synthetic_shards/shard-00002.tar",
                     "data/synthetic_shards/shard-00002.json",
                     "data/generator/unet/diffusion_pytorch_model.safetensors",
                     "data/filtered_set/manifest.jsonl", "data/distilled_set/distilled-00000.tar",
                     "data/classifier_distilled/seed-1.safetensors", "metrics.json less seconds",
                     "data/distilled_set/cells/dm-ipc2-filtered/repeat-0.safetensors",
                     "data/classifier_distilled/cells/dm-ipc2-filtered/convnet/r0-m1.safetensors"]:
        assert expected in names, expected
