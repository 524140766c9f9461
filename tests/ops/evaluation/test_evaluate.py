"""What the sweeps read of a finished classifier asset: the steps its seeds ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthfactory.ops.evaluation.evaluate import trained_steps


def test_trained_steps_reads_the_history_and_names_a_missing_asset(tmp_path: Path) -> None:
    arm = tmp_path / "classifier_filtered"
    arm.mkdir()
    (arm / "history.json").write_text(json.dumps({"seeds": [{"steps": 240}, {"steps": 240}]}))
    assert trained_steps(arm) == 240
    with pytest.raises(FileNotFoundError, match="materialize 'classifier_synthetic' first"):
        trained_steps(tmp_path / "classifier_synthetic")
