"""The sections of scoring and filtering: `judge` and `filtered_set`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthfactory.params.base import Section


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
    # Pixel correlation of 16-pixel thumbnails (filters.dedup_features) at which an image is a
    # copy: benchmarks/dedup.py finds copies with noise of up to 8 grey levels above it, and no
    # two distinct generated digits (the closest pair is at 0.979).
    dedup_threshold: float = Field(default=0.99, gt=0.0, le=1.0)
    quality: bool = True
    min_pass_rate: float = Field(default=0.2, ge=0.0, le=1.0)
    # Remove synthetic near-copies of real test images (the `contamination` thresholds): a
    # leakage guard that reads test pixels, never test labels or accuracies.
    drop_test_near_duplicates: bool = False



class RetrievalParams(Section):
    """The retrieval baseline (`retrieved_set`, the `retrieved` arm): where its pool is.

    `pool`: unlabeled real images — an image folder (searched recursively; sub-folders named
    after classes give hidden labels, used only to measure label precision) or WebDataset shards
    (a directory of .tar, a glob or a brace pattern; `.cls`/`.json` labels are hidden likewise).
    null: the real train split with its labels hidden. `per_class`: images retrieved per class;
    null: as many as the synthetic arm has (`prompts.images_per_class`).
    """

    pool: str | None = None
    per_class: int | None = Field(default=None, gt=0)
