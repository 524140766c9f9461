"""DVC end to end on tiny params (about 5 minutes on 2 cores): `make test-e2e`.

One repository lives through what a user does: reproduce, change a filter and reproduce again,
push to the default remote, restore everything in a fresh clone, go back to an older commit's
report, and compare two experiments in `dvc exp show`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthfactory.ops.storage.dvc_hash import dvc_md5
from tests.platform.dvc_repo import STAGES, FILTER_DOWNSTREAM, DvcRepo, make_repo, snapshot

pytestmark = pytest.mark.e2e
UPSTREAM = ["real_images", "prompts", "generator", "synthetic_shards", "judge", "shard_scores"]


def _outputs(repo: DvcRepo) -> dict[str, str]:
    """DVC's digest of every stage output in the repository's work tree."""
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    return {stage["outs"][0]["path"]: dvc_md5(repo.path / stage["outs"][0]["path"])
            for stage in lock["stages"].values()}


def _report(repo: DvcRepo) -> bytes:
    return (repo.path / "reports" / "eval" / "metrics.json").read_bytes()


def test_repro_push_pull_checkout_and_experiments(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    seconds, ran = repo.repro()
    print(f"\nfirst dvc repro: {seconds:.1f}s")
    assert sorted(ran) == sorted(STAGES)
    assert repo.repro()[1] == []
    first = repo.commit("tiny run, top_fraction 0.5")
    first_report = _report(repo)

    # A filter parameter: filtered_set and what depends on it run; the expensive steps do not.
    untouched = {name: snapshot(repo.path / "data" / name) for name in UPSTREAM}
    repo.set_params({"filtered_set": {"top_fraction": 0.9}})
    seconds, ran = repo.repro()
    print(f"dvc repro after a filter change: {seconds:.1f}s, {ran}")
    assert sorted(ran) == sorted(FILTER_DOWNSTREAM)
    for name, before in untouched.items():
        assert snapshot(repo.path / "data" / name) == before, f"{name} was rewritten"
    repo.commit("top_fraction 0.9")
    second_report = _report(repo)
    assert json.loads(second_report)["filter"]["kept"] > json.loads(first_report)["filter"]["kept"]

    # Push both commits' data; a fresh clone pulls byte-identical data and the same report.
    repo.dvc("push", "--all-commits")
    assert list(repo.remote.rglob("*.dir")), "no directory manifest on the default remote"
    clone = repo.clone(tmp_path / "clone")
    assert not (clone.path / "data").exists()
    clone.dvc("pull")
    assert _outputs(clone) == _outputs(repo)
    assert _report(clone) == second_report
    assert "up to date" in clone.dvc("status")

    # An older commit's report comes back with git checkout + dvc checkout (from the local cache),
    # and the newer one too; a clone that never had it pulls it instead.
    repo.git("checkout", "-q", first)
    repo.dvc("checkout")
    assert _report(repo) == first_report
    assert "up to date" in repo.dvc("status")
    repo.git("checkout", "-q", "main")
    repo.dvc("checkout")
    assert _report(repo) == second_report
    clone.git("checkout", "-q", first)
    clone.dvc("pull")
    assert _report(clone) == first_report

    # Two experiments with different filter thresholds, side by side in `dvc exp show`.
    for name, fraction in [("keep-third", 0.3), ("keep-all", 1.0)]:
        repo.dvc("exp", "run", "-n", name, "-S", f"filtered_set.top_fraction={fraction}")
    shown = _experiments(json.loads(repo.dvc("exp", "show", "--json")))
    low, high = shown["keep-third"], shown["keep-all"]
    assert low["params"]["filtered_set"]["top_fraction"] == 0.3
    assert high["params"]["filtered_set"]["top_fraction"] == 1.0
    assert low["metrics"]["arms"]["filtered"]["n_train"] < high["metrics"]["arms"]["filtered"]["n_train"]
    assert low["metrics"]["arms"]["filtered"] != high["metrics"]["arms"]["filtered"]
    assert low["metrics"]["arms"]["real"] == high["metrics"]["arms"]["real"]  # real arm: not re-run
    table = repo.dvc("exp", "show", "--csv")
    assert "arms.filtered.accuracy_mean" in table.splitlines()[0]


def _experiments(document: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` → {experiment name: {"params": ..., "metrics": ...}}."""
    found: dict[str, dict[str, Any]] = {}
    for baseline in document:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["reports/eval/metrics.json"]["data"]}
    return found
