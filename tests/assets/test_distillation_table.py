"""A table of cells from the real train split: experts, every learned kind, evaluation networks,
the reuse of finished cells on a rerun, and the export command."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from synthfactory.cli import main
from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params
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


def _materialize(root: Path, table: dict) -> dg.ExecuteInProcessResult:
    raw = tiny_params(root, distilled_set=table, expert_trajectories=EXPERTS)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    defs = build_definitions(parse_params(raw))
    return dg.materialize([defs.get_assets_def(name) for name in ASSETS],
                          resources=defs.resources)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    assert _materialize(root, TABLE).success
    return root


def test_every_cell_is_distilled_and_evaluated(table_run: Path) -> None:
    data = table_run / "data"
    experts = sorted(p.name for p in (data / "expert_trajectories" / "real").iterdir())
    assert experts == ["expert-0.safetensors", "expert-1.safetensors"]
    for method in TABLE["methods"]:
        cell = data / "distilled_set" / "cells" / f"{method}-ipc1-real"
        record = json.loads((cell / "cell.json").read_text())
        assert record["method"] == method and record["repeats"][0]["n_images"] == 10
        models = sorted((data / "classifier_distilled" / "cells" / cell.name / "convnet")
                        .glob("*.safetensors"))
        assert [m.name for m in models] == ["r0-m0.safetensors", "r0-m1.safetensors"]
    history = json.loads((data / "classifier_distilled" / "history.json").read_text())
    assert history["n_train"] == 10 and len(history["cells"]) == 3
    datm = json.loads((data / "distilled_set" / "cells" / "datm-ipc1-real" / "cell.json")
                      .read_text())
    assert datm["repeats"][0]["learned_lr"] is not None


def test_a_rerun_remakes_only_the_changed_cell_and_export_writes_images(
        table_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cells = table_run / "data" / "distilled_set" / "cells"
    before = {p.name: (p / "repeat-0.safetensors").read_bytes() for p in cells.iterdir()}
    changed = {**TABLE, "dm": {"iterations": 4, "batch_real": 16}}
    result = _materialize(table_run, changed)
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("distilled_set")]
    assert event.materialization.metadata["kept"].value == 2  # only dm was re-made
    after = {p.name: (p / "repeat-0.safetensors").read_bytes() for p in cells.iterdir()}
    assert [name for name in before if before[name] != after[name]] == ["dm-ipc1-real"]
    out = table_run / "export"
    assert main(["export", "distilled_set", "--params", str(table_run / "params.yaml"),
                 "--cell", "datm-ipc1-real", "--format", "imagefolder", str(out)]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) == 10 and len(labels[0]["soft_label"]) == 10  # datm's learned labels
    assert main(["export", "distilled_set", "--params", str(table_run / "params.yaml"),
                 "--cell", "kcenter-ipc1-real", "--format", "npz", str(table_run / "x")]) == 2
    assert "cell kcenter-ipc1-real is not in" in capsys.readouterr().err
    assert main(["export", "distilled_set", "--params", str(table_run / "params.yaml"),
                 "--format", "npz", str(table_run / "npz")]) == 0  # default: the first cell
    with np.load(table_run / "npz" / "distilled.npz") as npz:
        assert npz["images"].shape == (10, 8, 8, 1) and npz["labels"].tolist() == list(range(10))
