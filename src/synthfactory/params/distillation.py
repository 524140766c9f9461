"""The `distilled_set` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthfactory.params.base import Section


class DistilledSetParams(Section):
    """How the filtered set is reduced to `ipc` images per class."""

    method: Literal["random", "herding", "kcenter", "dm"] = "dm"
    ipc: int = Field(default=10, gt=0)
    # `dm` matches class means under fresh random ConvNets every iteration (the DM paper), or
    # under the judge's own features (`judge`: CLIP embeddings when the judge is CLIP).
    dm_features: Literal["random_convnet", "judge"] = "random_convnet"
    labels: Literal["hard", "soft"] = "hard"
    iterations: int = Field(default=500, gt=0)
    learning_rate: float = Field(default=1.0, gt=0.0)
    batch_real: int = Field(default=256, gt=0)

