"""A real git + DVC repository in a temporary directory, laid out like this project.

The repository holds a copy of `src/`, the project's `.dvc/` and `.gitignore`, a params file
(the shipped `params.yaml` with overrides, so every key a stage lists exists) and a `dvc.yaml`
written by `synthfactory dvc-sync`. Commands run with `PYTHONPATH=<repo>/src`, so the code DVC
hashes as stage dependencies is the code that runs, and with `HOME` inside the temporary
directory, so the default remote (`~/.local/share/synthfactory/dvc-remote`) is private to the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from synthfactory.ops.storage.dvc_hash import dvc_md5
from tests.support import PROJECT_ROOT

ROOT = PROJECT_ROOT
VENV_BIN = Path(sys.executable).parent
DVC = ROOT / ".venv-dvc" / "bin" / "dvc"
# With the shipped params (one dm cell) there is no expert_trajectories stage: the asset is in
# the graph only with an mtt/datm cell.
ASSETS = ["real_images", "prompts", "generator", "synthetic_shards", "judge", "shard_scores",
          "filtered_set", "retrieved_set", "distilled_set", "classifier_real",
          "classifier_retrieved", "classifier_synthetic", "classifier_filtered",
          "classifier_distilled", "classifier_mixed", "classifier_scaling", "eval_report"]
# The shipped params.yaml has `replicates: 2`: replicate r1's copies are stages `r1-<asset>`.
REPLICATED = ["prompts", "synthetic_shards", "shard_scores", "filtered_set",
              "classifier_synthetic", "classifier_filtered", "classifier_mixed"]
STAGES = [*ASSETS, *(f"r1-{asset}" for asset in REPLICATED)]
# What a change of a filtered_set parameter must re-run, and nothing else.
FILTER_DOWNSTREAM = ["filtered_set", "classifier_filtered", "classifier_mixed", "classifier_scaling",
                     "distilled_set", "classifier_distilled", "eval_report", "r1-filtered_set",
                     "r1-classifier_filtered", "r1-classifier_mixed"]


def stage_asset(stage: str) -> str:
    """The asset a stage materializes: `r1-prompts` is `r1/prompts`."""
    return stage.replace("-", "/", 1) if stage.startswith("r1-") else stage
REMOTE_UNDER_HOME = Path(".local") / "share" / "synthfactory" / "dvc-remote"

# The tiny graph for a real `dvc repro`: one torch thread (2 threads on a busy 2-core machine are
# many times slower), a handful of images, a few training steps.
TINY_DVC_PARAMS: dict[str, Any] = {
    "runtime": {"device": "cpu", "threads": 1},
    "real_images": {"shard_size": 400},
    "prompts": {"images_per_class": 4, "guidance": [1.0, 2.0]},
    "generator": {"ddpm": {"widths": [8, 16], "train_steps": 30, "batch_size": 32}},
    "synthetic_shards": {"shard_size": 20, "steps": 2, "batch_size": 20},
    "judge": {"epochs": 1, "width": 8},
    "filtered_set": {"threshold": None, "top_fraction": 0.5, "dedup_threshold": 0.999},
    "distilled_set": {"methods": ["random"], "ipcs": [1], "eval_models": 1,
                      "eval": {"epochs": 2, "width": 8}},
    "classifiers": {"n_seeds": 1, "epochs": 1, "min_steps": 5, "width": 8, "augmentation": False},
    "eval_report": {"grid_per_class": 2},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, section by section (nested dicts merged too)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class DvcRepo:
    """A git + DVC working tree under `path`, with commands that fail loudly."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home

    @property
    def remote(self) -> Path:
        """The default remote's directory (under the test's HOME)."""
        return self.home / REMOTE_UNDER_HOME

    def env(self) -> dict[str, str]:
        """The environment DVC and the stage commands run in."""
        return {**os.environ, "HOME": str(self.home), "PYTHONPATH": str(self.path / "src"),
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}

    def run(self, *command: str | Path) -> str:
        """Run a command in the repository; return stdout, or fail with its output."""
        done = subprocess.run([str(part) for part in command], cwd=self.path, env=self.env(),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, command))} exited {done.returncode}:\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done.stdout

    def dvc(self, *args: str) -> str:
        """`dvc ARGS` with the project's DVC."""
        return self.run(DVC, *args)

    def git(self, *args: str) -> str:
        """`git ARGS`."""
        return self.run("git", *args)

    def repro(self) -> tuple[float, list[str]]:
        """`dvc repro`: seconds taken and the stages that ran."""
        started = time.perf_counter()
        out = self.dvc("repro")
        return time.perf_counter() - started, ran_stages(out)

    def commit(self, message: str) -> str:
        """`git add` the DVC files and params, commit, and return the commit hash."""
        self.git("add", "dvc.yaml", "dvc.lock", "params.yaml")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def set_params(self, overrides: dict[str, Any]) -> None:
        """Merge `overrides` into the repository's params.yaml."""
        path = self.path / "params.yaml"
        path.write_text(yaml.safe_dump(merged(yaml.safe_load(path.read_text()), overrides),
                                       sort_keys=False))

    def metrics(self) -> dict[str, Any]:
        """The report's metrics.json."""
        return json.loads((self.path / "reports" / "eval" / "metrics.json").read_text())

    def clone(self, path: Path) -> DvcRepo:
        """A fresh `git clone` of this repository, sharing HOME (so the same default remote)."""
        subprocess.run(["git", "clone", "-q", str(self.path), str(path)], check=True,
                       env=self.env())
        return DvcRepo(path, self.home)


def ran_stages(dvc_output: str) -> list[str]:
    """The stages `dvc repro` or `dvc exp run` ran, from its output ("Running stage 'x':")."""
    return [line.split("'")[1] for line in dvc_output.splitlines()
            if line.startswith("Running stage '")]


def make_repo(tmp_path: Path, overrides: dict[str, Any] | None = None) -> DvcRepo:
    """A fresh repository with the project's DVC setup, tiny params and a synced dvc.yaml."""
    if not DVC.exists():
        raise AssertionError(f"{DVC} is missing: run `make dvc-env` (the Makefile's `test` target "
                             "does) to install DVC into its own environment")
    repo = DvcRepo(tmp_path / "repo", tmp_path / "home")
    repo.path.mkdir()
    repo.home.mkdir()
    shutil.copytree(ROOT / "src", repo.path / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / ".dvc", repo.path / ".dvc", ignore=shutil.ignore_patterns(
        "tmp", "cache", "config.local"))
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo.path / name)
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                    merged(TINY_DVC_PARAMS, overrides or {}))
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo.git("init", "-q", "-b", "main")
    repo.run(VENV_BIN / "synthfactory", "dvc-sync")
    repo.git("add", ".")
    repo.git("commit", "-q", "-m", "synthfactory with tiny params")
    return repo


def snapshot(directory: Path) -> tuple[str, dict[str, int]]:
    """DVC's digest of a directory and the modification times of its files (rewritten or not)."""
    return dvc_md5(directory), {str(p.relative_to(directory)): os.stat(p).st_mtime_ns
                                for p in directory.rglob("*") if p.is_file()}
