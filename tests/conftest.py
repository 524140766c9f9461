"""Shared fixtures: a tiny, fast configuration of the whole graph in a temporary store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from synthfactory.params import ProjectConfig, parse_params

TINY_PARAMS: dict[str, Any] = {
    "seed": 0,
    # One torch thread: on the shared 2-core machines two threads contend with the step
    # processes and other work and run many times slower.
    "runtime": {"device": "cpu", "threads": 1},
    "prompts": {"images_per_class": 6, "guidance": [1.0, 2.0]},
    "generator": {"ddpm": {"widths": [16, 32], "train_steps": 30, "batch_size": 32}},
    "synthetic_shards": {"shard_size": 25, "steps": 4, "batch_size": 16},
    "judge": {"epochs": 2, "width": 16},
    # An undertrained generator makes poor digits: keep the top half of each class so every
    # class has enough samples for the distilled set.
    "filtered_set": {"threshold": None, "top_fraction": 0.5, "dedup_threshold": 0.999},
    "distilled_set": {"method": "dm", "ipc": 2, "iterations": 10, "batch_real": 16},
    "classifiers": {"n_seeds": 2, "epochs": 1, "min_steps": 10, "width": 16},
}


def tiny_params(root: Path, **overrides: Any) -> dict[str, Any]:
    """TINY_PARAMS with the store under `root`, sections updated by `overrides`."""
    raw = {key: (dict(value) if isinstance(value, dict) else value)
           for key, value in TINY_PARAMS.items()}
    raw["store"] = {"root": str(root / "data")}
    raw["eval_report"] = {"output_dir": str(root / "reports" / "eval")}
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    return raw


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


@pytest.fixture(autouse=True)
def _test_dagster_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped instance config per test: runs never land in the project's
    dagster_home/ (the Makefile exports DAGSTER_HOME for `make dev` and `make run`)."""
    home = tmp_path_factory.mktemp("dagster_home")
    config = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"
    (home / "dagster.yaml").write_text(config.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home
