"""The digests that decide whether a finished cell or expert is kept: ops computes them as the
params digest their configs (params import nothing from ops, and ops nothing from params), so
a cell or expert finished before the assets were thinned is kept after."""

from __future__ import annotations

from synthfactory.ops.distillation.partitions import inputs_digest
from synthfactory.params import config_digest


def test_inputs_digest_is_the_params_config_digest() -> None:
    value = {"cell": "dm-ipc10-real", "dsa": {"strategy": "color_crop", "fill": -1.0},
             "method": {"iterations": 3, "features": "judge"}, "judge": None, "seed": 0,
             "experts": [1, 2.5, "x"]}
    assert inputs_digest(value) == config_digest(value)
    assert inputs_digest({**value, "seed": 1}) != inputs_digest(value)
