"""Typed parameters: `params.yaml` → pydantic models → Dagster resource config.

The file has three kinds of keys:

- `seed` and `runtime` configure the torch runtime resource (device, dtype, threads, seed);
- `store` configures the artifact store resource (its root);
- `dvc` configures the DVC resource (executable, and whether a materialization outside
  `dvc repro` commits its output to dvc.lock and pushes it); no stage reads it;
- every other key is the section of the asset with the same name, gathered in `Params`, the
  `params` resource that the assets read. Its values are the defaults shown in the Dagster
  launchpad, so one run can override a section without editing the file.

Unknown keys and wrong types fail with a message that names the key, the bad value and the rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synthfactory.resources.dvc import DvcResource
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore


ModelT = TypeVar("ModelT", bound=BaseModel)


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the key, the value and the fix."""


class Section(dg.Config):
    """Base of every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RealImagesParams(Section):
    """Where the real images come from and how they are split."""

    source: Literal["digits", "imagefolder"] = "digits"
    root: str | None = None
    resolution: int = Field(default=8, ge=4, le=1024)
    channels: int | None = None
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    shard_size: int = Field(default=1000, gt=0)
    few_shot: int | None = Field(default=None, gt=0)

    @field_validator("channels")
    @classmethod
    def _grey_or_rgb(cls, channels: int | None) -> int | None:
        if channels not in (None, 1, 3):
            raise ValueError(f"real_images.channels {channels} must be 1 (grey), 3 (RGB) or null")
        return channels

    @model_validator(mode="after")
    def _root_matches_source(self) -> RealImagesParams:
        if self.source == "imagefolder" and not self.root:
            raise ValueError("real_images.source 'imagefolder' needs real_images.root: the folder "
                             "that holds one sub-folder of images per class")
        return self

    def effective_channels(self) -> int:
        """Channels of the stored images: the configured value, else 1 for digits and 3 otherwise."""
        if self.channels is not None:
            return self.channels
        return 1 if self.source == "digits" else 3


class PromptsParams(Section):
    """How many images of each class to generate and with which text and guidance."""

    images_per_class: int = Field(default=100, gt=0)
    templates: list[str] = ["a handwritten digit {name}"]
    negative_prompt: str = ""
    guidance: list[float] = [2.0]

    @field_validator("templates")
    @classmethod
    def _templates_name_the_class(cls, templates: list[str]) -> list[str]:
        if not templates:
            raise ValueError("prompts.templates is empty: give at least one, e.g. 'a photo of a {name}'")
        for template in templates:
            if "{name}" not in template:
                raise ValueError(f"prompts.templates entry {template!r} has no '{{name}}' placeholder "
                                 "for the class name")
        return templates

    @field_validator("guidance")
    @classmethod
    def _guidance_non_negative(cls, guidance: list[float]) -> list[float]:
        if not guidance or any(g < 0 for g in guidance):
            raise ValueError(f"prompts.guidance {guidance} must be a non-empty list of scales >= 0")
        return guidance


class DdpmParams(Section):
    """Training settings of the embedded class-conditional DDPM."""

    widths: list[int] = [32, 64]
    train_steps: int = Field(default=1200, gt=0)
    batch_size: int = Field(default=128, gt=0)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    cfg_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    ema_decay: float = Field(default=0.995, ge=0.0, lt=1.0)
    num_train_timesteps: int = Field(default=1000, gt=1)

    @field_validator("widths")
    @classmethod
    def _widths_fit_groupnorm(cls, widths: list[int]) -> list[int]:
        if not widths or any(w <= 0 or w % 8 for w in widths):
            raise ValueError(f"generator.ddpm.widths {widths} must be positive multiples of 8 "
                             "(the UNet normalises in groups of 8)")
        return widths


class GeneratorParams(Section):
    """Which diffusion model generates the images."""

    backend: Literal["ddpm"] = "ddpm"
    model: str | None = None
    ddpm: DdpmParams = DdpmParams()


class SyntheticShardsParams(Section):
    """How the prompts are sampled and cut into shards."""

    shard_size: int = Field(default=250, gt=0)
    steps: int = Field(default=25, gt=0)
    scheduler: Literal["ddim", "dpm"] = "ddim"
    batch_size: int = Field(default=250, gt=0)


class JudgeParams(Section):
    """The embedded judge: the ConvNet trained on real images that scores synthetic ones."""

    epochs: int = Field(default=30, gt=0)
    width: int = Field(default=128, gt=0)


class FilteredSetParams(Section):
    """Which filters run, and their thresholds. A switched-off filter rejects nothing."""

    confidence: bool = True
    threshold: float | None = Field(default=0.2, ge=0.0, le=1.0)
    top_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    dedup: bool = True
    dedup_threshold: float = Field(default=0.98, gt=0.0, le=1.0)
    quality: bool = True
    min_pass_rate: float = Field(default=0.2, ge=0.0, le=1.0)


class DistilledSetParams(Section):
    """How the filtered set is reduced to `ipc` images per class."""

    method: Literal["random", "herding", "kcenter", "dm"] = "dm"
    ipc: int = Field(default=10, gt=0)
    labels: Literal["hard", "soft"] = "hard"
    iterations: int = Field(default=500, gt=0)
    learning_rate: float = Field(default=1.0, gt=0.0)
    batch_real: int = Field(default=256, gt=0)


class ClassifiersParams(Section):
    """Training of the evaluation classifiers: one architecture, every arm, `n_seeds` seeds."""

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


class Params(dg.ConfigurableResource):
    """The asset sections of `params.yaml`, as the `params` resource the assets read."""

    model_config = ConfigDict(extra="forbid")

    real_images: RealImagesParams = RealImagesParams()
    prompts: PromptsParams = PromptsParams()
    generator: GeneratorParams = GeneratorParams()
    synthetic_shards: SyntheticShardsParams = SyntheticShardsParams()
    judge: JudgeParams = JudgeParams()
    filtered_set: FilteredSetParams = FilteredSetParams()
    distilled_set: DistilledSetParams = DistilledSetParams()
    classifiers: ClassifiersParams = ClassifiersParams()
    eval_report: EvalReportParams = EvalReportParams()

    def digest(self, *sections: str) -> str:
        """sha256 (16 hex digits) of the named sections: the config part of a data version."""
        return config_digest({name: getattr(self, name).model_dump() for name in sections})


def config_digest(value: Any) -> str:
    """A short, stable digest of any JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProjectConfig:
    """Everything one params file configures: the resources the definitions bind."""

    params: Params
    store: ArtifactStore
    runtime: TorchRuntime
    dvc: DvcResource = field(default_factory=DvcResource)


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> ProjectConfig:
    """Validate a params mapping; raise `ParamsError` naming every bad key and value."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got "
                          f"{type(raw).__name__}")
    sections = dict(raw)
    seed = sections.pop("seed", 0)
    store = sections.pop("store", None) or {}
    runtime = sections.pop("runtime", None) or {}
    dvc = sections.pop("dvc", None) or {}
    if isinstance(runtime, dict) and "seed" in runtime:
        raise ParamsError(f"{source}: runtime.seed: the seed is the top-level key `seed`; move it "
                          "there")
    return ProjectConfig(
        params=_validate(Params, sections, source, prefix=""),
        store=_validate(ArtifactStore, store, source, prefix="store."),
        runtime=_validate(TorchRuntime, {**runtime, "seed": seed}, source, prefix="runtime."),
        dvc=_validate(DvcResource, dvc, source, prefix="dvc."),
    )


def _validate(model: type[ModelT], values: Any, source: str, prefix: str) -> ModelT:
    """Validate one part of the file; a failure names `file: key = value: rule` per problem."""
    if not isinstance(values, dict):
        raise ParamsError(f"{source}: {prefix.rstrip('.')} must be a mapping, got {values!r}")
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"])
            key = "seed" if key == "seed" else prefix + key
            value = problem.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = "unknown key (check its spelling and its section against params.yaml)"
            problems.append(f"{source}: {key}{shown}: {message}")
        raise ParamsError("; ".join(problems)) from None


def load_params(path: str | Path = "params.yaml") -> ProjectConfig:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {str(path)!r} does not exist: run from the project root or "
                          "pass --params FILE")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        where = " ".join(str(error).split())  # one line: the CLI prints errors on one line
        raise ParamsError(f"{path}: not valid YAML ({where})") from None
    return parse_params(raw, source=str(path))
