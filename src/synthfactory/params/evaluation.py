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



class ContaminationParams(Section):
    """When a synthetic image counts as a near-copy of a real test image (the leakage check).

    A synthetic image is a near-copy when one test image is within both thresholds of it: cosine
    similarity of the judge's features and of the pixels at `pixel_resolution` (mean-centred,
    i.e. a correlation). Both at once, so a degenerate feature space (an undertrained judge) or
    two plain backgrounds alone never flag an image. On the shipped digits run, real validation
    images reach 0.989 (pixels) and 0.988 (features) against their nearest test image, generated
    digits 0.980 and 0.986; copies with ±8 grey levels of noise stay above 0.998 in pixels.
    `eval_report` counts the near-copies; with `filtered_set.drop_test_near_duplicates` the
    filter also removes them.
    """

    feature_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    pixel_threshold: float = Field(default=0.995, gt=0.0, le=1.0)
    pixel_resolution: int = Field(default=16, ge=4, le=256)
    # Rows of the report's side-by-side grid (near-copies, else the closest pairs).
    grid_pairs: int = Field(default=16, gt=0)
