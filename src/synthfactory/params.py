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

    source: Literal["digits", "imagefolder", "webdataset"] = "digits"
    root: str | None = None
    test_root: str | None = None
    class_names: list[str] | None = None
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
        if self.source == "webdataset" and not self.root:
            raise ValueError("real_images.source 'webdataset' needs real_images.root: a directory "
                             "of .tar shards, a glob or a brace pattern like data-{000..009}.tar")
        if self.source == "digits" and (self.root or self.test_root or self.class_names):
            raise ValueError("real_images.source 'digits' takes no root, test_root or "
                             "class_names: set source to imagefolder or webdataset to use them")
        return self

    def effective_channels(self) -> int:
        """Channels of the stored images: the configured value, else 1 for digits and 3 otherwise."""
        if self.channels is not None:
            return self.channels
        return 1 if self.source == "digits" else 3


class PromptsParams(Section):
    """How many images of each class to generate and with which text and guidance.

    Strategies: `class_name` (the name alone), `templates` (cycled over each class's images),
    `hypernym_background` ("<name>, <hypernym> inside <background>" from a context table).
    """

    strategy: Literal["class_name", "templates", "hypernym_background"] = "templates"
    images_per_class: int = Field(default=100, gt=0)
    templates: list[str] = ["a handwritten digit {name}"]
    context_table: str | None = None
    display_names: str | None = None
    negative_prompt: str = ""
    guidance: list[float] = [2.0]
    guidance_range: list[float] | None = None

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

    @field_validator("guidance_range")
    @classmethod
    def _range_is_ordered(cls, bounds: list[float] | None) -> list[float] | None:
        if bounds is not None and (len(bounds) != 2 or not 0 <= bounds[0] <= bounds[1]):
            raise ValueError(f"prompts.guidance_range {bounds} must be [low, high] with "
                             "0 <= low <= high")
        return bounds

    @model_validator(mode="after")
    def _strategy_has_its_inputs(self) -> PromptsParams:
        if self.strategy == "hypernym_background" and not self.context_table:
            raise ValueError("prompts.strategy 'hypernym_background' needs prompts.context_table: "
                             "cifar10, cifar100 or a YAML file of {class: {hypernym, backgrounds}}")
        return self


class DdpmParams(Section):
    """Training settings of the embedded class-conditional DDPM."""

    widths: list[int] = [32, 64]
    # At least 20: the one-cycle learning-rate schedule needs a warm-up of 10% (torch divides by
    # zero at exactly 10 steps).
    train_steps: int = Field(default=1200, ge=20)
    batch_size: int = Field(default=128, gt=0)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    cfg_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    ema_decay: float = Field(default=0.995, ge=0.0, lt=1.0)
    num_train_timesteps: int = Field(default=1000, gt=1)
    checkpoint_every: int = Field(default=200, ge=0)  # steps between checkpoints; 0: none

    @field_validator("widths")
    @classmethod
    def _widths_fit_groupnorm(cls, widths: list[int]) -> list[int]:
        if not widths or any(w <= 0 or w % 8 for w in widths):
            raise ValueError(f"generator.ddpm.widths {widths} must be positive multiples of 8 "
                             "(the UNet normalises in groups of 8)")
        return widths


class GeneratorParams(Section):
    """Which diffusion model generates the images.

    `ddpm` trains the embedded class-conditional model; `diffusers` loads a pretrained
    text-to-image pipeline from `model` (a local directory or a hub id), safetensors only.
    """

    backend: Literal["ddpm", "diffusers"] = "ddpm"
    model: str | None = None
    revision: str | None = None
    variant: str | None = None
    local_files_only: bool = False
    lora: str | None = None
    lora_scale: float = Field(default=1.0, ge=0.0)
    compile: bool = False
    ddpm: DdpmParams = DdpmParams()

    @model_validator(mode="after")
    def _model_matches_backend(self) -> GeneratorParams:
        if self.backend == "diffusers" and not self.model:
            raise ValueError("generator.backend 'diffusers' needs generator.model: a local "
                             "pipeline directory or a hub id such as stabilityai/sd-turbo")
        if self.backend == "ddpm" and (self.model or self.lora):
            raise ValueError(f"generator.model {self.model!r} / lora {self.lora!r} need "
                             "generator.backend: diffusers (the ddpm backend trains its own model)")
        return self


class SyntheticShardsParams(Section):
    """How the prompts are sampled and cut into shards."""

    shard_size: int = Field(default=250, gt=0)
    steps: int = Field(default=25, gt=0)
    scheduler: Literal["default", "ddim", "dpm", "euler", "euler_a", "unipc"] = "ddim"
    batch_size: int = Field(default=250, gt=0)
    height: int | None = Field(default=None, ge=8)
    width: int | None = Field(default=None, ge=8)
    bad_images: Literal["regenerate", "drop"] = "regenerate"
    max_attempts: int = Field(default=3, gt=0)


class JudgeParams(Section):
    """The model that scores synthetic images: a ConvNet trained on real images, or CLIP.

    `convnet` uses `epochs` and `width`; `clip` loads `model` (a local directory or a hub id)
    and scores classes zero-shot with `templates`.
    """

    backend: Literal["convnet", "clip"] = "convnet"
    model: str | None = None
    revision: str | None = None
    local_files_only: bool = False
    templates: list[str] = ["a photo of a {name}."]
    batch_size: int = Field(default=64, gt=0)
    epochs: int = Field(default=30, gt=0)
    width: int = Field(default=128, gt=0)

    @model_validator(mode="after")
    def _model_matches_backend(self) -> JudgeParams:
        if self.backend == "clip" and not self.model:
            raise ValueError("judge.backend 'clip' needs judge.model: a local CLIP directory or a "
                             "hub id such as openai/clip-vit-base-patch32")
        if self.backend == "convnet" and self.model:
            raise ValueError(f"judge.model {self.model!r} needs judge.backend: clip")
        return self


class FilteredSetParams(Section):
    """Which filters run, and their thresholds. A switched-off filter rejects nothing."""

    confidence: bool = True
    threshold: float | None = Field(default=0.2, ge=0.0, le=1.0)
    top_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    margin: float | None = Field(default=None, ge=-1.0, le=1.0)
    clip_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    dedup: bool = True
    dedup_threshold: float = Field(default=0.98, gt=0.0, le=1.0)
    quality: bool = True
    min_pass_rate: float = Field(default=0.2, ge=0.0, le=1.0)


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

    @model_validator(mode="after")
    def _filters_match_judge(self) -> Params:
        if self.filtered_set.clip_score is not None and self.judge.backend != "clip":
            raise ValueError(f"filtered_set.clip_score {self.filtered_set.clip_score} needs "
                             "judge.backend: clip (image-prompt similarity is a CLIP score)")
        return self

    def digest(self, *sections: str) -> str:
        """sha256 (16 hex digits) of the named sections: the config part of a data version."""
        return config_digest({name: getattr(self, name).model_dump() for name in sections})


class ScheduleParams(Section):
    """The schedule that rebuilds the whole graph (off unless `enabled`)."""

    cron: str = "0 3 * * *"
    enabled: bool = False
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError(f"automation.schedule.cron {cron!r} must have 5 fields "
                             "(minute hour day month weekday), e.g. '0 3 * * *'")
        return cron


class SensorParams(Section):
    """The sensor that starts a run when the class list or the prompt config changes."""

    enabled: bool = True
    interval_seconds: int = Field(default=30, ge=5)


class AutomationParams(Section):
    """Schedules, sensors and declarative automation (`eager`: downstream assets refresh when
    their upstream data changes)."""

    schedule: ScheduleParams = ScheduleParams()
    sensor: SensorParams = SensorParams()
    eager: bool = True


class ExecutorParams(Section):
    """Which Dagster executor runs the steps of a run: one process (`in_process`), a process
    per step (`multiprocess`, at most `max_concurrent` at once), or a Kubernetes job per step
    (`k8s`, needs `pip install dagster-k8s`; see deploy/k8s/)."""

    kind: Literal["in_process", "multiprocess", "k8s"] = "multiprocess"
    max_concurrent: int = Field(default=2, gt=0)
    # kind k8s only: the rest of dagster-k8s' `k8s_job_executor` config (job_namespace,
    # env_secrets, step_k8s_config, …), checked against its schema when the executor is built.
    k8s: dict[str, Any] = Field(default_factory=dict)


def config_digest(value: Any) -> str:
    """A short, stable digest of any JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProjectConfig:
    """Everything one params file configures: the resources the definitions bind, how the
    graph is automated (schedule, sensor) and which executor runs its steps."""

    params: Params
    store: ArtifactStore
    runtime: TorchRuntime
    automation: AutomationParams = AutomationParams()
    executor: ExecutorParams = ExecutorParams()
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
    automation = sections.pop("automation", None) or {}
    executor = sections.pop("executor", None) or {}
    return ProjectConfig(
        params=_validate(Params, sections, source, prefix=""),
        store=_validate(ArtifactStore, store, source, prefix="store."),
        runtime=_validate(TorchRuntime, {**runtime, "seed": seed}, source, prefix="runtime."),
        automation=_validate(AutomationParams, automation, source, prefix="automation."),
        executor=_validate(ExecutorParams, executor, source, prefix="executor."),
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
            where = f"{key}{shown}: " if key else ""  # a rule across sections names its keys
            problems.append(f"{source}: {where}{message}")
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
