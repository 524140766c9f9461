"""A table of cells from the real train split, as Dagster partitions: experts (one partition
each), every learned kind, evaluation networks, the reuse of finished cells on a rerun, one cell
and one expert re-made alone (the project CLI, Dagster's CLI, the multiprocess executor), each
partition's own metadata and data version, and the export command."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from synthfactory.assets.dvc_versions import partition_digests
from synthfactory.cli import main
from synthfactory.ops.distillation.export import load_export
from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params
from synthfactory.planning import PlanResult, materialize_plan
from tests.support import tiny_params

# dc and the coresets are covered in tests/ops/distillation; here the kinds that need other
# assets (experts) and learned labels.
TABLE = {"methods": ["dm", "mtt", "datm"], "ipcs": [1], "sources": ["real"],
         "eval_models": 2, "eval": {"epochs": 3, "width": 16},
         "dm": {"iterations": 3, "batch_real": 16}, "dc": {"iterations": 2, "batch_real": 16},
         "mtt": {"iterations": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1,
                 "final_max_start_epoch": 2}}
EXPERTS = {"experts": 2, "epochs": 3, "batch_size": 256}
ASSETS = ["real_images", "expert_trajectories", "distilled_set", "classifier_distilled"]
CELLS = ["dm-ipc1-real", "mtt-ipc1-real", "datm-ipc1-real"]


def _materialize(root: Path, table: dict, **kwargs: object) -> PlanResult:
    """The distillation part of the graph in the planner's runs: real_images, one run per
    expert, one per cell (its distilled set and its networks)."""
    raw = tiny_params(root, distilled_set=table, expert_trajectories=EXPERTS)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return materialize_plan(build_definitions(parse_params(raw)), ASSETS, **kwargs)


def _cell_state(directory: Path, data: str = "repeat-*") -> dict[str, tuple[str, int]]:
    """Each cell's digest of its data files (`cell.json` and histories record wall time) and
    the newest mtime among all its files (a rewrite changes it)."""
    state = {}
    for cell in sorted((directory / "cells").iterdir()):
        digest = hashlib.sha256()
        for path in sorted(cell.glob(data)):
            digest.update(path.relative_to(cell).as_posix().encode() + path.read_bytes())
        state[cell.name] = (digest.hexdigest(), max(p.stat().st_mtime_ns for p in cell.rglob("*")))
    return state


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PlanResult]:
    root = tmp_path_factory.mktemp("table")
    result = _materialize(root, TABLE)
    assert result.success
    return root, result


def test_every_cell_is_distilled_and_evaluated(table_run: tuple[Path, PlanResult]) -> None:
    root, result = table_run
    data = root / "data"
    experts = sorted(p.name for p in (data / "expert_trajectories").iterdir())
    assert experts == ["real-expert-0.safetensors", "real-expert-1.safetensors"]
    for method in TABLE["methods"]:
        cell = data / "distilled_set" / "cells" / f"{method}-ipc1-real"
        record = json.loads((cell / "cell.json").read_text())
        assert record["method"] == method and record["repeats"][0]["n_images"] == 10
        networks = data / "classifier_distilled" / "cells" / cell.name
        models = sorted((networks / "convnet").glob("*.safetensors"))
        assert [m.name for m in models] == ["r0-m0.safetensors", "r0-m1.safetensors"]
        history = json.loads((networks / "history.json").read_text())
        assert [row["model"] for row in history["architectures"]["convnet"]] == [0, 1]
    headline = json.loads((data / "classifier_distilled" / "history.json").read_text())
    assert headline["n_train"] == 10 and headline["sources"] == ["dm-ipc1-real"]
    datm = json.loads((data / "distilled_set" / "cells" / "datm-ipc1-real" / "cell.json")
                      .read_text())
    assert datm["repeats"][0]["learned_lr"] is not None
    # real_images, one run per expert, one per cell: in that order.
    assert [run.describe() for run, _ in result.runs] == [
        "real_images", "expert_trajectories [real-expert-0]",
        "expert_trajectories [real-expert-1]",
        *(f"distilled_set, classifier_distilled [{cell}]" for cell in CELLS)]


def test_trajectory_cells_train_their_networks_at_the_learned_step_size(
        table_run: tuple[Path, PlanResult]) -> None:
    """mtt-distillation evaluates at `lr_net = syn_lr`: every network of an mtt or datm cell
    trains at the cell's stored learned step size, a dm cell's at eval.learning_rate."""
    from synthfactory.ops.distillation.cellstore import read_cell
    root, _ = table_run
    data = root / "data"
    for cell in CELLS:
        learned = read_cell(data / "distilled_set" / "cells" / cell)[0].learned_lr
        history = json.loads((data / "classifier_distilled" / "cells" / cell / "history.json")
                             .read_text())
        rates = [row["learning_rate"] for row in history["architectures"]["convnet"]]
        expected = 0.01 if cell.startswith("dm-") else learned
        assert rates == [pytest.approx(expected)] * len(rates), cell


def test_each_partition_has_its_own_metadata_and_data_version(
        table_run: tuple[Path, PlanResult]) -> None:
    """Guards per-partition versions: each cell's (expert's) materialization carries the digest
    of its own files, not the whole directory's, and its own metadata."""
    root, result = table_run
    events = {(e.asset_key.to_user_string(), e.partition): e.materialization
              for e in result.get_asset_materialization_events()}
    for asset, keys in (("distilled_set", CELLS), ("classifier_distilled", CELLS),
                        ("expert_trajectories", ["real-expert-0", "real-expert-1"])):
        digests = partition_digests(root / "data" / asset, keys)
        versions = {key: events[asset, key].tags["dagster/data_version"] for key in keys}
        assert versions == digests and len(set(versions.values())) == len(keys), asset
    for cell in CELLS:
        metadata = events["distilled_set", cell].metadata
        assert metadata["method"].value == cell.split("-")[0] and metadata["n_images"].value == 10
        assert "data:image/png;base64," in metadata["grid"].value


def test_partition_files_are_found_by_key_without_ambiguity(tmp_path: Path) -> None:
    """A partition's files: under its directory or named after it, never a longer key's
    (`dm-ipc1-real` is in `dm-ipc10-real`), never a writer's temporary."""
    def write(root: Path, names: list[str]) -> Path:
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
        return root

    owned = {"dm-ipc1-real": ["cells/dm-ipc1-real/repeat-0.tar"],
             "real-expert-1": ["real-expert-1.safetensors"],
             "00001": ["shard-00001.json", "shard-00001.tar"]}
    mixed = write(tmp_path / "mixed", [name for names in owned.values() for name in names] + [
        "cells/dm-ipc10-real/repeat-0.tar", "cells/.tmp-dm-ipc1-real.1234abcd/repeat-0.tar",
        "real-expert-10.safetensors", "shard-00011.tar"])
    digests = partition_digests(mixed, [*owned, "gone"])
    for key, names in owned.items():
        assert digests[key] == partition_digests(write(tmp_path / key, names), [key])[key], key
    assert digests["gone"] is None


def test_a_rerun_remakes_only_the_changed_cell_and_export_writes_images(
        table_run: tuple[Path, PlanResult], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = table_run
    distilled = root / "data" / "distilled_set"
    before = _cell_state(distilled)
    changed = {**TABLE, "dm": {"iterations": 4, "batch_real": 16}}
    result = _materialize(root, changed)
    assert result.success
    kept = {e.partition: e.materialization.metadata["kept"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey("distilled_set")}
    assert kept == {"dm-ipc1-real": False, "mtt-ipc1-real": True, "datm-ipc1-real": True}
    after = _cell_state(distilled)
    assert [name for name in before if before[name] != after[name]] == ["dm-ipc1-real"]
    out = root / "export"
    assert main(["export", "distilled_set", "--params", str(root / "params.yaml"),
                 "--cell", "datm-ipc1-real", "--format", "imagefolder", str(out)]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) == 10 and len(labels[0]["soft_label"]) == 10  # datm's learned labels
    # The card says what the set is and how it was measured, and a loader reads it all back.
    exported = load_export(out)
    card = exported.card
    assert card["method"] == "datm" and card["ipc"] == 1 and card["soft_labels"] is True
    assert card["settings"] and card["budget_fraction"] is not None
    assert {"epochs", "models", "architecture", "dsa"} <= set(card["evaluation"])
    # This table run made no report: the card says the accuracy is not measured yet, and where
    # (tests/assets/test_graph.py exports a cell that the report measured).
    assert card["measured_on_test"] is None and "run eval_report" in card["measured_note"]
    assert exported.images.shape == (10, 8, 8, 1) and exported.soft_labels.shape == (10, 10)
    assert main(["export", "distilled_set", "--params", str(root / "params.yaml"),
                 "--cell", "kcenter-ipc1-real", "--format", "npz", str(root / "x")]) == 2
    assert "cell kcenter-ipc1-real is not in" in capsys.readouterr().err
    assert main(["export", "distilled_set", "--params", str(root / "params.yaml"),
                 "--format", "npz", str(root / "npz")]) == 0  # default: the first cell
    with np.load(root / "npz" / "distilled.npz") as npz:
        assert npz["images"].shape == (10, 8, 8, 1) and npz["labels"].tolist() == list(range(10))


def test_one_cell_is_remade_alone_by_the_cli_and_dagster_cli(
        table_run: tuple[Path, PlanResult], capsys: pytest.CaptureFixture[str]) -> None:
    """Guards "re-made alone": a cell deleted and re-made (project CLI, in one process) comes
    back byte-identical and the other cells are not rewritten (a whole-directory publish would
    touch them); then Dagster's own CLI re-makes one cell's networks (`--partition`). (The
    multiprocess executor runs the planner's runs in tests/platform/test_cli_backfill.py.)"""
    root, _ = table_run
    params = str(root / "params.yaml")
    distilled = root / "data" / "distilled_set"
    before = _cell_state(distilled)
    shutil.rmtree(distilled / "cells" / "mtt-ipc1-real")
    assert main(["run", "--params", params, "--select", "distilled_set",
                 "--partitions", "mtt-ipc1-real"]) == 0
    out = capsys.readouterr().out
    assert "run 1/1: distilled_set [mtt-ipc1-real]" in out and "1 run(s) succeeded" in out
    after = _cell_state(distilled)
    assert {name: state[0] for name, state in after.items()} == {
        name: state[0] for name, state in before.items()}  # the same bytes again
    assert [name for name in before if before[name][1] != after[name][1]] == ["mtt-ipc1-real"]

    networks = root / "data" / "classifier_distilled"
    before = _cell_state(networks, "*/*.safetensors")
    # The step in the CLI's own process: a multiprocess step would import the graph a second
    # time, and the executor is not what this guards (the cells' inputs digest ignores it).
    in_process = root / "params-in-process.yaml"
    in_process.write_text(yaml.safe_dump({**yaml.safe_load(Path(params).read_text()),
                                          "executor": {"kind": "in_process"}}))
    env = {**os.environ, "SYNTHFACTORY_PARAMS": str(in_process)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
         "synthfactory.definitions", "--select", "classifier_distilled",
         "--partition", "datm-ipc1-real"], env=env, cwd=root, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _cell_state(networks, "*/*.safetensors")
    assert [name for name in before if before[name][1] != after[name][1]] == ["datm-ipc1-real"]
    assert after == {**before, "datm-ipc1-real": after["datm-ipc1-real"]}
    assert after["datm-ipc1-real"][0] == before["datm-ipc1-real"][0]  # deterministic
    with dg.DagsterInstance.get() as instance:  # the CLIs' instance (this test's DAGSTER_HOME)
        assert sorted(run.tags.get("dagster/partition") for run in instance.get_runs()) == [
            "datm-ipc1-real", "mtt-ipc1-real"]


def test_one_expert_is_remade_alone_and_a_missing_one_stops_its_cells(
        table_run: tuple[Path, PlanResult], capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the experts' partitions: a trajectory cell refuses to distil without all its
    experts and names the partition to make; that expert alone comes back byte-identical,
    without touching the other."""
    root, _ = table_run
    params = str(root / "params.yaml")
    experts = root / "data" / "expert_trajectories"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in experts.iterdir()}
    (experts / "real-expert-1.safetensors").unlink()
    shutil.rmtree(root / "data" / "distilled_set" / "cells" / "mtt-ipc1-real")
    assert main(["run", "--params", params, "--select", "distilled_set",
                 "--partitions", "mtt-ipc1-real"]) == 2
    assert ("expert real-expert-1 of cell mtt-ipc1-real does not exist: materialize "
            "expert_trajectories partition real-expert-1 first") in capsys.readouterr().err
    assert main(["run", "--params", params, "--select", "expert_trajectories",
                 "--partitions", "real-expert-1"]) == 0
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in experts.iterdir()}
    assert after["real-expert-1.safetensors"][0] == before["real-expert-1.safetensors"][0]
    assert after["real-expert-0.safetensors"] == before["real-expert-0.safetensors"]
    assert main(["run", "--params", params, "--select", "distilled_set",
                 "--partitions", "mtt-ipc1-real"]) == 0
