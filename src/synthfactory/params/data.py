"""The sections of the graph's inputs: `real_images` and `prompts`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from synthfactory.params.base import Section


class RealImagesParams(Section):
    """Where the real images come from and how they are split."""

    source: Literal["digits", "imagefolder", "webdataset"] = "digits"
    root: str | None = None
    test_root: str | None = None
    class_names: list[str] | None = None
    resolution: int = Field(default=8, ge=4, le=1024)
    channels: int | None = None
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    # Carved from train (per class): every choice and sweep reads it; test only for the report.
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
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
    # Cycled over each class's images: the mix measured best for training (README), not the
    # single scale whose images a judge recognises most often.
    guidance: list[float] = [1.0, 2.0, 3.0]
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

