"""Deployment settings: GPU pools and op tags, the executor from params, the instance config."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from synthfactory.definitions import build_definitions
from synthfactory.executors import GPU_OP_TAGS, build_executor
from synthfactory.params import ExecutorParams, ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[1]
CPU_ONLY = {"real_images", "prompts"}  # they read files and numbers, never a torch device


def test_every_accelerator_asset_is_in_the_gpu_pool_and_asks_kubernetes_for_a_gpu() -> None:
    defs = build_definitions(parse_params({}))
    seen = set()
    for assets_def in defs.assets:
        name = assets_def.key.to_user_string()
        seen.add(name)
        node = assets_def.node_def
        if name in CPU_ONLY:
            assert node.pool is None, name
            continue
        assert node.pool == "gpu", name
        # Dagster stores a dict op tag as JSON; dagster-k8s parses it back.
        assert json.loads(node.tags["dagster-k8s/config"]) == GPU_OP_TAGS["dagster-k8s/config"]
    assert len(seen) == 12


def test_executor_follows_params() -> None:
    assert build_executor(ExecutorParams(kind="in_process")) is dg.in_process_executor
    multi = build_executor(ExecutorParams(kind="multiprocess", max_concurrent=3))
    assert multi.name == "multiprocess"
    defs = build_definitions(parse_params({"executor": {"kind": "in_process"}}))
    assert defs.executor is dg.in_process_executor
    with pytest.raises(ParamsError, match="executor.kind"):
        parse_params({"executor": {"kind": "ray"}})


@pytest.mark.skipif(importlib.util.find_spec("dagster_k8s") is not None,
                    reason="dagster-k8s is installed: the missing-dependency message cannot show")
def test_k8s_executor_without_dagster_k8s_names_the_install() -> None:
    with pytest.raises(ValueError, match="pip install 'dagster-k8s"):
        build_executor(ExecutorParams(kind="k8s"))


def test_shipped_instance_config(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"  # a copy: the instance creates its storage beside the file
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        assert instance.telemetry_enabled is False
