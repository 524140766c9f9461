"""The sections of the answer: `classifiers` and `eval_report`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from synthfactory.params.base import Section


class ClassifiersParams(Section):
    """Training of the evaluation classifiers: one architecture, every arm, `n_seeds` seeds.

    `architecture`: the DD ConvNet (default; `width` is its width), or the standard ResNet-18,
    ResNet-50 or VGG-11 of the synthetic-data and cross-architecture literature.
    """

    architecture: Literal["convnet", "resnet18", "resnet50", "vgg11"] = "convnet"
    n_seeds: int = Field(default=3, gt=0)
    epochs: int = Field(default=30, gt=0)
    min_steps: int = Field(default=300, gt=0)
    batch_size: int = Field(default=128, gt=0)
    learning_rate: float = Field(default=0.01, gt=0.0)
    width: int = Field(default=128, gt=0)
    augmentation: bool = True
    flip: bool = False


class EvalReportParams(Section):
    """Where the report goes (relative to the working directory) and how big its grids are."""

    output_dir: str = "reports/eval"
    grid_per_class: int = Field(default=8, gt=0)
    # arm → the lowest mean accuracy its asset check accepts; arms not listed are not checked.
    accuracy_floor: dict[str, float] = {}

    @field_validator("accuracy_floor")
    @classmethod
    def _floors_are_fractions(cls, floors: dict[str, float]) -> dict[str, float]:
        arms = ("real", "synthetic", "filtered", "distilled")
        unknown = sorted(set(floors) - set(arms))
        if unknown:
            raise ValueError(f"eval_report.accuracy_floor names {unknown}; arms are {list(arms)}")
        bad = {arm: floor for arm, floor in floors.items() if not 0.0 <= floor <= 1.0}
        if bad:
            raise ValueError(f"eval_report.accuracy_floor {bad}: floors are accuracies in [0, 1]")
        return floors

