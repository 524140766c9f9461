"""Deployment settings: GPU pools and op tags, the executor from params, the instance config."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from synthfactory.definitions import build_definitions
from synthfactory.executors import GPU_OP_TAGS, build_executor
from synthfactory.params import ExecutorParams, ParamsError, load_params, parse_params
from tests.support import PROJECT_ROOT

ROOT = PROJECT_ROOT
# They read files and numbers, never a torch device (the filter decides from shard_scores).
CPU_ONLY = {"real_images", "prompts", "filtered_set"}


def test_every_accelerator_asset_is_in_the_gpu_pool_and_asks_kubernetes_for_a_gpu() -> None:
    # An mtt cell brings expert_trajectories into the graph: every asset there is.
    defs = build_definitions(parse_params({"distilled_set": {"methods": ["dm", "mtt"]}}))
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
    # Every asset of the graph was looked at (the default arms, scaling and the report included).
    assert seen == {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"retrieved_set", "classifier_mixed", "classifier_scaling", "shard_scores"} <= seen


def test_ddp_classifiers_ask_kubernetes_for_one_gpu_per_device() -> None:
    defs = build_definitions(parse_params({"runtime": {"devices": 4}}))
    for assets_def in defs.assets:
        name = assets_def.key.to_user_string()
        if assets_def.node_def.pool != "gpu":
            continue
        limits = json.loads(assets_def.node_def.tags["dagster-k8s/config"])[
            "container_config"]["resources"]["limits"]
        ddp = name in {"classifier_real", "classifier_synthetic", "classifier_filtered"}
        assert limits == {"nvidia.com/gpu": "4" if ddp else "1"}, name


def test_executor_follows_params() -> None:
    assert build_executor(ExecutorParams(kind="in_process")) is dg.in_process_executor
    multi = build_executor(ExecutorParams(kind="multiprocess", max_concurrent=3))
    assert multi.name == "multiprocess"
    defs = build_definitions(parse_params({"executor": {"kind": "in_process"}}))
    assert defs.executor is dg.in_process_executor
    with pytest.raises(ParamsError, match="executor.kind"):
        parse_params({"executor": {"kind": "dask"}})


def test_k8s_executor_without_dagster_k8s_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # as if it were not installed
    with pytest.raises(ValueError, match="pip install 'dagster-k8s"):
        build_executor(ExecutorParams(kind="k8s"))


def test_shipped_kubernetes_params_build_the_k8s_job_executor() -> None:
    pytest.importorskip("dagster_k8s", reason="pip install -e '.[dev]' installs dagster-k8s")
    config = load_params(str(ROOT / "deploy" / "k8s" / "params.yaml"))
    assert config.store.is_remote and config.store.root.startswith("s3://")
    defs = build_definitions(config)
    assert defs.executor.name == "k8s"
    # The GPU request rides on the GPU assets' op tags, which the step jobs merge with
    # step_k8s_config; a CPU asset asks for no GPU.
    tags = defs.get_assets_def("synthetic_shards").node_def.tags
    assert json.loads(tags["dagster-k8s/config"])["container_config"]["resources"]["limits"] == {
        "nvidia.com/gpu": "1"}
    assert "dagster-k8s/config" not in defs.get_assets_def("prompts").node_def.tags
    with pytest.raises(ValueError, match="job_namespace.*not valid k8s_job_executor config"):
        build_executor(ExecutorParams(kind="k8s", k8s={"job_namespace": 3}))


def test_shipped_helm_values_load_this_code_location_with_the_k8s_params() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    module = re.search(r'module_name = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    [env] = [e for e in deployment["env"] if e["name"] == "SYNTHFACTORY_PARAMS"]
    # The Dockerfile copies the repository to /app.
    assert (ROOT / env["value"].removeprefix("/app/")).is_file()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True


def test_shipped_instance_config(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"  # a copy: the instance creates its storage beside the file
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        assert instance.telemetry_enabled is False
