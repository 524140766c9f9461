"""The code location loads, names the assets of DESIGN.md, and the CLI runs a selection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synthfactory.cli import main
from synthfactory.definitions import build_definitions, shard_partitions
from synthfactory.params import parse_params
from tests.support import PROJECT_ROOT

ROOT = PROJECT_ROOT


def test_module_loads_with_the_shipped_params() -> None:
    code = ("import synthfactory.definitions as d, sys; "
            "print(sorted(k.to_user_string() for k in d.defs.resolve_asset_graph().get_all_asset_keys())); "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == str(sorted([
        "real_images", "prompts", "generator", "synthetic_shards", "judge", "shard_scores",
        "filtered_set", "distilled_set", "retrieved_set", "classifier_real",
        "classifier_retrieved", "classifier_synthetic", "classifier_filtered",
        "classifier_distilled", "classifier_mixed", "classifier_scaling", "eval_report",
        # the shipped `replicates: 2`: replicate r1's copies
        *(f"r1/{asset}" for asset in ("prompts", "synthetic_shards", "shard_scores",
                                      "filtered_set", "classifier_synthetic",
                                      "classifier_filtered", "classifier_mixed"))]))
    assert out[1] == "False False"  # nothing heavy at import


def test_shard_partitions_follow_classes_images_and_shard_size() -> None:
    config = parse_params({"prompts": {"images_per_class": 101},
                           "synthetic_shards": {"shard_size": 250}})
    keys = shard_partitions(config).get_partition_keys()
    assert keys == ["00000", "00001", "00002", "00003", "00004"]  # 1010 images / 250


def test_assets_have_descriptions_groups_and_code_versions() -> None:
    defs = build_definitions(parse_params({}))
    for assets_def in defs.assets:
        spec = next(iter(assets_def.specs))
        assert spec.description and spec.group_name and spec.code_version, spec.key


def test_cli_runs_a_selection_and_prints_a_summary(tiny_params_file: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--params", str(tiny_params_file), "--select", "prompts"]) == 0
    out = capsys.readouterr().out
    assert "run 1/1: prompts" in out and "1 run(s) succeeded" in out
    assert (tiny_params_file.parent / "data" / "prompts" / "prompts.jsonl").is_file()


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: {images_per_class: -3}\n")
    assert main(["run", "--params", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "prompts.images_per_class = -3" in err
    assert main(["run", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
