"""One params file as a whole: the `params` resource, the other resources, and loading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from synthfactory.params.base import ParamsError, config_digest
from synthfactory.params.curation import FilteredSetParams, JudgeParams, RetrievalParams
from synthfactory.params.data import PromptsParams, RealImagesParams
from synthfactory.params.distillation import DistilledSetParams, ExpertTrajectoriesParams
from synthfactory.params.evaluation import (ClassifiersParams, ContaminationParams,
                                             EvalReportParams)
from synthfactory.params.generation import GeneratorParams, SyntheticShardsParams
from synthfactory.params.platform import AutomationParams, ExecutorParams
from synthfactory.params.refinement import RefinementParams
from synthfactory.resources.dvc import DvcResource
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

ModelT = TypeVar("ModelT", bound=BaseModel)


class Params(dg.ConfigurableResource):
    """The asset sections of `params.yaml`, as the `params` resource the assets read."""

    model_config = ConfigDict(extra="forbid")

    real_images: RealImagesParams = RealImagesParams()
    prompts: PromptsParams = PromptsParams()
    generator: GeneratorParams = GeneratorParams()
    synthetic_shards: SyntheticShardsParams = SyntheticShardsParams()
    judge: JudgeParams = JudgeParams()
    filtered_set: FilteredSetParams = FilteredSetParams()
    retrieval: RetrievalParams = RetrievalParams()
    expert_trajectories: ExpertTrajectoriesParams = ExpertTrajectoriesParams()
    distilled_set: DistilledSetParams = DistilledSetParams()
    classifiers: ClassifiersParams = ClassifiersParams()
    eval_report: EvalReportParams = EvalReportParams()
    contamination: ContaminationParams = ContaminationParams()
    refinement: RefinementParams = RefinementParams()

    @model_validator(mode="after")
    def _filters_match_judge(self) -> Params:
        if self.filtered_set.clip_score is not None and self.judge.backend != "clip":
            raise ValueError(f"filtered_set.clip_score {self.filtered_set.clip_score} needs "
                             "judge.backend: clip (image-prompt similarity is a CLIP score)")
        return self

    @model_validator(mode="after")
    def _labelled_part_is_the_few_shots(self) -> Params:
        # Few-shot: the K shots are the only labelled real images, so they are the labelled part
        # that ranks the train-split pool; another size would learn from labels few-shot hides.
        few_shot, labelled = self.real_images.few_shot, self.retrieval.labelled_per_class
        if few_shot is not None and labelled is not None and labelled != few_shot:
            raise ValueError(f"retrieval.labelled_per_class {labelled} differs from "
                             f"real_images.few_shot {few_shot}: with few-shot the labelled part "
                             "is the K shots; remove labelled_per_class")
        return self

    @model_validator(mode="after")
    def _sources_cover_the_distilled_set(self) -> Params:
        # Known before any work: the filter only removes images, so a class can never keep more
        # than images_per_class (or its top fraction), and the few-shot real set holds
        # few_shot images per class; an ipc above that is refused, not degraded.
        ipc, n = max(self.distilled_set.ipcs), self.prompts.images_per_class
        fraction = self.filtered_set.top_fraction if self.filtered_set.confidence else None
        sources = self.distilled_set.sources
        few_shot = self.real_images.few_shot
        if "real" in sources and few_shot is not None and few_shot < ipc:
            raise ValueError(f"real_images.few_shot = {few_shot} leaves a class {few_shot} real "
                             f"images, fewer than distilled_set.ipcs {ipc} with source real: "
                             f"raise few_shot to at least {ipc} or lower the ipcs")
        reach = {"synthetic": n, "filtered": kept_at_most(n, fraction)}
        short = [source for source in sources if source in reach and reach[source] < ipc]
        if not short:
            return self
        if "filtered" not in short or fraction is None:
            raise ValueError(f"prompts.images_per_class = {n} is below distilled_set.ipcs {ipc} "
                             f"(source {short[0]}; the filter only removes images): raise "
                             f"prompts.images_per_class to at least {ipc} or lower the ipcs to "
                             f"{n} or less")
        needed = next(count for count in range(ipc, 100 * ipc + 100)
                      if kept_at_most(count, fraction) >= ipc)
        raise ValueError(f"prompts.images_per_class = {n} leaves a class at most "
                         f"{kept_at_most(n, fraction)} images after filtered_set.top_fraction = "
                         f"{fraction}, fewer than distilled_set.ipcs {ipc} (source filtered): "
                         f"raise prompts.images_per_class to at least {needed} or lower the ipcs "
                         f"to {kept_at_most(n, fraction)} or less")

    def train_images_needed(self) -> int:
        """The fewest train images every class needs: one, or the largest ipc distilled from the
        real images (the preflight and `real_images` refuse a class with fewer)."""
        config = self.distilled_set
        return max(config.ipcs) if "real" in config.sources else 1

    def digest(self, *sections: str) -> str:
        """sha256 (16 hex digits) of the named sections: the config part of a data version."""
        return config_digest({name: getattr(self, name).model_dump() for name in sections})


def kept_at_most(images_per_class: int, top_fraction: float | None) -> int:
    """The most images of a class the filter can keep: all, or its top fraction (at least one)."""
    if top_fraction is None:
        return images_per_class
    return max(1, int(round(images_per_class * top_fraction)))


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
    # Independent draws of everything random downstream of the generator's weights (sampling
    # seeds, shards, scores, filter, the classifiers trained on them): r0 is the graph, r1 …
    # copies of its assets (assets/replicates.py). 1: no copies.
    replicates: int = 1


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
    replicates = sections.pop("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ParamsError(f"{source}: replicates = {replicates!r}: must be an integer >= 1 "
                          "(1: one draw; 2 or more: independent replicates for the intervals)")
    return ProjectConfig(
        params=_validate(Params, sections, source, prefix=""),
        store=_validate(ArtifactStore, store, source, prefix="store."),
        runtime=_validate(TorchRuntime, {**runtime, "seed": seed}, source, prefix="runtime."),
        automation=_validate(AutomationParams, automation, source, prefix="automation."),
        executor=_validate(ExecutorParams, executor, source, prefix="executor."),
        dvc=_validate(DvcResource, dvc, source, prefix="dvc."),
        replicates=replicates,
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

