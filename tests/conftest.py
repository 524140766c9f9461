"""Shared fixtures: the tiny configuration of the whole graph in a temporary store, tiny
pretrained models built from config, and a Dagster instance per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from synthfactory.params import ProjectConfig, parse_params
from tests.support import PROJECT_ROOT, tiny_params


@pytest.fixture
def tiny_config(tmp_path: Path) -> ProjectConfig:
    """The tiny configuration, validated, with its store in `tmp_path/data`."""
    return parse_params(tiny_params(tmp_path))


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    """The tiny configuration written as a params file."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(tmp_path)))
    return path


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StableDiffusionPipeline built from config, saved with save_pretrained."""
    from synthfactory.ops.generation.random_models import build_sd_pipeline

    return build_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP model + processor built from config, saved with save_pretrained."""
    from synthfactory.ops.generation.random_models import build_clip

    return build_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(autouse=True)
def _test_dagster_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped instance config per test: runs never land in the project's
    dagster_home/ (the Makefile exports DAGSTER_HOME for `make dev` and `make run`)."""
    home = tmp_path_factory.mktemp("dagster_home")
    config = PROJECT_ROOT / "dagster_home" / "dagster.yaml"
    (home / "dagster.yaml").write_text(config.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _params_env_unset() -> Iterator[None]:
    """`synthfactory.cli.main` exports SYNTHFACTORY_PARAMS for the processes it starts. Every
    test starts and ends without it: a value left by an in-process `main` (a module fixture's
    included) would make a later subprocess of the same worker load a deleted temporary params
    file and die before its first event (a Dagster step process, then a run waiting forever).
    Not monkeypatch: its undo would put back a value leaked before the test began."""
    os.environ.pop("SYNTHFACTORY_PARAMS", None)
    yield
    os.environ.pop("SYNTHFACTORY_PARAMS", None)


# The long end-to-end runs (a whole default graph on a CPU, `dvc repro`) get this per-test
# limit instead of pyproject's 600 s: long, but still finite, so no run can hang CI.
E2E_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give e2e tests their longer timeout (unless a test sets its own)."""
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
