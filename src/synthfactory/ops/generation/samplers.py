"""Sampler (scheduler) choice: one table for both generator backends.

Schedulers are separate from models in diffusers: any of these can be built from a pipeline's or
the embedded DDPM's scheduler config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

SAMPLERS: dict[str, type] = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
# `default` keeps a pretrained pipeline's own scheduler (e.g. SD-Turbo's); the embedded DDPM
# has none worth keeping for sampling (its training scheduler is the slow ancestral DDPM).
DEFAULT = "default"


def sampler_class(name: str) -> type:
    """The scheduler class of a sampler name; an error that lists the names otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"synthetic_shards.scheduler {name!r} is not one of "
                         f"{', '.join([DEFAULT, *SAMPLERS])}")
    return SAMPLERS[name]


def build_sampler(name: str, config: Any) -> Any:
    """A fresh scheduler of the named kind from another scheduler's config."""
    return sampler_class(name).from_config(config)


@dataclass(frozen=True)
class SamplerSettings:
    """How a batch is sampled: steps, sampler, and the image size (text-to-image only)."""

    steps: int
    scheduler: str
    height: int | None = None
    width: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The settings recorded with every generated sample."""
        return asdict(self)
