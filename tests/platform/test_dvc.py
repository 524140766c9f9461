"""DVC versions what Dagster makes: dvc.yaml follows the asset graph, `dvc repro` rebuilds only what
changed, and each materialization carries DVC's digest of its output as its data version.

Real parts: the committed dvc.yaml, the project's DVC (`.venv-dvc`, installed by `make dvc-env`),
real git repositories in tmp_path and real materializations on tiny params.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from synthfactory.cli import main
from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.dvc_hash import dvc_md5
from synthfactory.params import ProjectConfig, parse_params
from synthfactory.resources.dvc import DvcError, DvcResource
from tests.platform.dvc_repo import (DVC, ROOT, STAGES, VENV_BIN, make_repo, ran_stages,
                                     stage_asset)
from tests.support import tiny_params


def _dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_committed_dvc_yaml_matches_the_asset_graph(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["dvc-sync", "--check"]) == 0, capsys.readouterr().err
    assert sorted(_dvc_yaml()["stages"]) == sorted(STAGES)


def test_an_asset_without_its_stage_fails_the_check(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    @dg.asset(deps=["filtered_set"], group_name="curation", code_version="1")
    def extra_set(context) -> dg.MaterializeResult:  # no annotation: Dagster rejects a string one
        """An asset someone added without running dvc-sync."""
        return dg.MaterializeResult()

    import synthfactory.definitions

    original = synthfactory.definitions.build_definitions

    def with_extra(config: ProjectConfig) -> dg.Definitions:
        defs = original(config)
        return dg.Definitions(assets=[*defs.assets, extra_set], resources=defs.resources)

    monkeypatch.setattr(synthfactory.definitions, "build_definitions", with_extra)
    monkeypatch.chdir(ROOT)
    assert main(["dvc-sync", "--check"]) == 1
    assert "dvc.yaml does not match the asset graph: run `synthfactory dvc-sync`" in \
        capsys.readouterr().err


def test_stages_list_code_upstream_outputs_and_exact_params() -> None:
    document = _dvc_yaml()
    stages = document["stages"]
    defs = build_definitions(parse_params({"replicates": 2}))  # as the shipped params.yaml
    graph = defs.resolve_asset_graph()
    for stage_name in STAGES:
        stage, name = stages[stage_name], stage_asset(stage_name)
        assert stage["cmd"] == f"synthfactory run --select key:{name}"
        out = "reports/eval" if name == "eval_report" else f"data/{name}"
        assert stage["outs"] == [out]
        parents = {key.to_user_string()
                   for key in graph.get(dg.AssetKey.from_user_string(name)).parent_keys}
        assert {d for d in stage["deps"] if d.startswith("data/")} == {f"data/{p}" for p in parents}
        assert all(Path(ROOT, d).is_file() for d in stage["deps"] if d.startswith("src/"))
        assert "src/synthfactory/resources/dvc.py" not in stage["deps"]  # runs after the output
    # The filter's own keys (and the seed of its ties, the batch size it loads the judge with
    # and the contamination thresholds it drops near-copies of test images with); the judge's
    # scores are shard_scores', which reads only the batch size it loads the judge with; the
    # expensive upstream steps read neither.
    assert stages["filtered_set"]["params"] == ["contamination", "filtered_set",
                                                "judge.batch_size", "seed"]
    assert stages["shard_scores"]["params"] == ["judge.batch_size"]
    assert "src/synthfactory/ops/curation/filters.py" in stages["filtered_set"]["deps"]
    for upstream in ["real_images", "prompts", "generator", "synthetic_shards", "judge",
                     "shard_scores"]:
        assert not any(p.startswith("filtered_set") for p in stages[upstream]["params"]), upstream
        # shard_scores computes the filters' per-sample features (dedup, quality flags): a change
        # of filters.py re-scores the shards; the generator and the judge stay.
        if upstream != "shard_scores":
            assert "src/synthfactory/ops/curation/filters.py" not in stages[upstream]["deps"], \
                upstream
    # The judge trains through the streaming loader where classifiers train
    # (publishing.placement): its memory, worker and device settings are inputs; a CLIP judge
    # names the classes with prompts.display_names.
    assert stages["judge"]["params"] == ["classifiers.flip", "judge", "prompts.display_names",
                                         "runtime.devices", "runtime.in_memory_mb",
                                         "runtime.shuffle_buffer", "runtime.workers", "seed"]
    assert document["metrics"] == ["reports/eval/metrics.json"]
    (plot,) = document["plots"]
    assert list(plot) == ["reports/eval/arms.csv"]


def test_dvc_resource_says_how_to_install_dvc_when_missing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DvcError, match="'no-such-dvc' is not on PATH.*make dvc-env"):
        DvcResource(executable="no-such-dvc").command()
    monkeypatch.setenv("PATH", str(tmp_path))  # no dvc on PATH, and no .venv-dvc in the repo
    with pytest.raises(DvcError, match=r"\.venv-dvc/bin/dvc does not exist.*make dvc-env"):
        DvcResource(repo=str(tmp_path)).command()
    with pytest.raises(DvcError, match=r"`dvc status` failed in .*exit \d+"):
        DvcResource(executable=str(DVC), repo=str(tmp_path)).run("status")


def test_materialization_metadata_carries_dvc_md5_as_data_version(tmp_path: Path) -> None:
    config = parse_params(tiny_params(tmp_path))
    defs = build_definitions(config)
    result = dg.materialize(list(defs.assets), selection=["real_images", "prompts"],
                            resources=defs.resources)
    assert result.success
    for event in result.get_asset_materialization_events():
        name = event.asset_key.to_user_string()
        materialization = event.step_materialization_data.materialization
        digest = dvc_md5(tmp_path / "data" / name)
        assert materialization.metadata["dvc_md5"].value == digest
        assert materialization.tags["dagster/data_version"] == digest  # the UI shows this


def test_commit_and_push_after_materialization(tmp_path: Path) -> None:
    """`dvc: {commit: true, push: true}`: a materialization outside `dvc repro` lands in dvc.lock
    and on the default remote."""
    repo = make_repo(tmp_path)
    repo.set_params({"dvc": {"executable": str(DVC), "commit": True, "push": True}})
    out = repo.run(VENV_BIN / "synthfactory", "run", "--select", "key:prompts")
    assert "1 run(s) succeeded" in out
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    assert lock["stages"]["prompts"]["outs"][0]["md5"] == dvc_md5(repo.path / "data" / "prompts")
    assert "prompts" not in repo.dvc("status", "prompts")  # recorded: nothing changed
    assert list(repo.remote.rglob("*")), "nothing was pushed to the default remote"
    assert "are in sync" in repo.dvc("status", "--cloud", "prompts")


def test_dvc_reads_the_asset_graph_from_dvc_yaml(tmp_path: Path) -> None:
    """DVC itself parses the synced dvc.yaml of a fresh repository: its stage graph (`dvc dag`)
    has every asset as a stage and exactly the asset graph's edges. (The real repro: the e2e
    test below.)"""
    repo = make_repo(tmp_path)
    dot = repo.dvc("dag", "--dot")
    edges = {tuple(part.strip().strip('";') for part in line.split("->"))
             for line in dot.splitlines() if "->" in line}
    nodes = {line.strip().strip('";') for line in dot.splitlines()
             if line.strip().startswith('"') and "->" not in line}
    assert nodes == set(STAGES)
    graph = build_definitions(parse_params({"replicates": 2})).resolve_asset_graph()
    assert edges == {(parent.to_user_string().replace("/", "-"), name) for name in STAGES
                     for parent in graph.get(dg.AssetKey.from_user_string(stage_asset(name))
                                             ).parent_keys}


@pytest.mark.e2e
def test_dvc_repro_builds_the_graph_once(tmp_path: Path) -> None:
    """The whole graph through `dvc repro` on tiny params; a second repro does nothing; a filter
    parameter schedules filtered_set, not the generator or the shards. (The re-run itself, push,
    pull, checkout and experiments: tests/test_dvc_e2e.py.) Behind the e2e marker: about three
    minutes on two cores."""
    repo = make_repo(tmp_path)
    seconds, ran = repo.repro()
    print(f"\nfirst dvc repro: {seconds:.1f}s, {len(ran)} stages")
    assert sorted(ran) == sorted(STAGES)
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    for name, stage in lock["stages"].items():  # our digest is DVC's, for every output
        out = stage["outs"][0]
        assert out["md5"] == dvc_md5(repo.path / out["path"]), name
    csv = (repo.path / "reports" / "eval" / "arms.csv").read_text().splitlines()
    arms = json.loads((repo.path / "reports" / "eval" / "metrics.json").read_text())["arms"]
    assert csv[0] == "arm,n_train,accuracy_mean,accuracy_std,seeds,group" and len(csv) == 1 + len(arms)
    seconds, ran = repo.repro()
    print(f"second dvc repro: {seconds:.1f}s, {ran} stages")
    assert ran == []
    repo.set_params({"filtered_set": {"top_fraction": 0.9}})
    # --dry lists the stages whose own inputs changed (downstream ones follow once it runs).
    scheduled = ran_stages(repo.dvc("repro", "--dry"))
    assert "filtered_set" in scheduled
    assert not {"generator", "synthetic_shards", "judge", "prompts"} & set(scheduled), scheduled


def test_sync_refuses_a_store_outside_the_repository(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "outside.yaml"
    params.write_text(yaml.safe_dump({"store": {"root": str(tmp_path / "data")}}))
    monkeypatch.chdir(ROOT)
    assert main(["dvc-sync", "--params", str(params), "--output", str(tmp_path / "dvc.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'data'}" in err and "outside the repository" in err
    assert not (tmp_path / "dvc.yaml").exists()
