"""The sections of the answer: `classifiers` and `eval_report`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from synthfactory.params.base import Section

# What `classifiers.arms` is by default: ops/evaluation/arms.py's DEFAULT_ARMS (a test keeps the
# two equal). The names are checked against that registry when the definitions are built, so
# that params import nothing from ops (every DVC stage depends on the params modules).
DEFAULT_ARMS = ["real", "retrieved", "synthetic", "filtered", "distilled", "mixed"]


class ClassifiersParams(Section):
    """Training of the evaluation classifiers: which arms, one architecture, `n_seeds` seeds.

    `arms`: the rows of the report (ops/evaluation/arms.py lists them and what each answers).
    `architecture`: the DD ConvNet (default; `width` is its width, null following the images'
    resolution: 64 up to 16 px, the reference's 128 above — chosen on the validation
    splits of 8- and 16-px folders, docs/results.md), or the standard ResNet-18,
    ResNet-50 or VGG-11 of the synthetic-data and cross-architecture literature. Each has a
    training recipe (ops/training/recipes.py); `learning_rate`, `batch_size`, `weight_decay` and
    `label_smoothing` override it when set (a batch size alone scales the learning rate).
    `precision: auto` trains in bf16 autocast with channels-last on CUDA, float32 on CPU.
    `budget`: `equal_steps` (default) trains every compared arm, the scaling curve's subsets
    and the closed loop's arms the same optimizer steps — the largest compared arm's epoch
    schedule (ops/evaluation/budgets.py) — so a difference between arms is their data's;
    `epochs`: steps follow each arm's size (max(min_steps, epochs × batches per pass)). The
    distilled arm always follows the distillation protocol's epochs.
    `control_steps`: the real arm also trains one seed (the first) at this multiple of its
    steps, measured on the validation split, so the report can say when the recipe's budget is
    too short for the data (`eval_report.warnings.min_real_vs_control`); 0: no control.
    """

    arms: list[str] = Field(default_factory=lambda: list(DEFAULT_ARMS))
    architecture: Literal["convnet", "resnet18", "resnet50", "vgg11"] = "convnet"
    n_seeds: int = Field(default=3, gt=0)
    budget: Literal["equal_steps", "epochs"] = "equal_steps"
    epochs: int = Field(default=30, gt=0)
    min_steps: int = Field(default=300, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    learning_rate: float | None = Field(default=None, gt=0.0)
    weight_decay: float | None = Field(default=None, ge=0.0)
    label_smoothing: float | None = Field(default=None, ge=0.0, lt=1.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | None = None
    width: int | None = Field(default=None, gt=0)
    augmentation: bool = True
    flip: bool = False
    control_steps: float = Field(default=2.0, ge=0.0)

    @field_validator("control_steps")
    @classmethod
    def _control_is_longer(cls, factor: float) -> float:
        if 0.0 < factor <= 1.0:
            raise ValueError(f"classifiers.control_steps {factor} must be above 1 (a longer "
                             "schedule than the arm's, e.g. 2.0) or 0 (no control)")
        return factor


class WarningsParams(Section):
    """The bounds of the report's warnings (ops/evaluation/soundness.py): a run that crosses one
    is flagged, with the number that tripped it, at the top of the report and in its checks.

    `min_class_pass_rate`: the judge recognises (the filter keeps) at least this share of every
    class's generated images. `max_seed_std`: an arm's test accuracy varies over its classifier
    seeds by at most this sample std. `min_train_accuracy`: every seed of every arm fits its
    own training set at least this well. `min_real_vs_control`: the real arm's validation
    accuracy is at least this fraction of what the same recipe reaches with
    `classifiers.control_steps` times the steps. `max_synthetic_gap`: the synthetic and
    filtered arms' test accuracy is at most this far below the real arm's (the generated set
    stands in for the real one). `min_retrieval_precision`: the retrieved arm's images carry
    their class's (hidden) label at least this often. `max_skipped_share`: at most this share
    of the real image files is skipped as unusable (corrupt, HEIC or camera RAW, empty; hidden
    files and files without an image extension are not counted). Identical real images under
    two classes are always warned. (The generator's own warning, stopped at its ceiling while
    still improving, uses `generator.ddpm.min_delta`.)
    """

    min_class_pass_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    max_seed_std: float = Field(default=0.02, ge=0.0)
    min_train_accuracy: float = Field(default=0.9, ge=0.0, le=1.0)
    min_real_vs_control: float = Field(default=0.95, ge=0.0, le=1.0)
    max_synthetic_gap: float = Field(default=0.05, ge=0.0, le=1.0)
    min_retrieval_precision: float = Field(default=0.8, ge=0.0, le=1.0)
    max_skipped_share: float = Field(default=0.05, ge=0.0, le=1.0)


class EvalReportParams(Section):
    """Where the report goes (relative to the working directory), how big its grids are, and the
    scaling curve: `scaling` lists fractions of each class's filtered images (nested, seeded
    subsets; [] for none); 1.0 reuses the filtered arm's classifiers."""

    output_dir: str = "reports/eval"
    grid_per_class: int = Field(default=8, gt=0)
    scaling: list[float] = [0.1, 0.3, 1.0]
    # arm → the lowest mean accuracy its asset check accepts; the check also fails when a
    # configured arm is missing from the report, and names the arms without a floor (the names
    # must be among classifiers.arms: checked when the definitions are built).
    accuracy_floor: dict[str, float] = {}
    warnings: WarningsParams = WarningsParams()

    @field_validator("scaling")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        bad = [f for f in fractions if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"eval_report.scaling {bad}: fractions of the filtered set must be "
                             "in (0, 1], e.g. [0.1, 0.3, 1.0]")
        if fractions and len(set(fractions)) < 2:
            raise ValueError(f"eval_report.scaling {fractions}: a curve needs two or more "
                             "different fractions (or [] for none)")
        return sorted(set(fractions))

    @field_validator("accuracy_floor")
    @classmethod
    def _floors_are_fractions(cls, floors: dict[str, float]) -> dict[str, float]:
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
