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
    """The retrieval baseline (`retrieved_set`, the `retrieved` arm): where its pool is and what
    ranks it.

    `pool`: unlabeled real images — an image folder (searched recursively; sub-folders named
    after classes give hidden labels, used only to measure label precision) or WebDataset shards
    (a directory of .tar, a glob or a brace pattern; `.cls`/`.json` labels are hidden likewise).
    An external pool is ranked in the judge's feature space (the judge never saw its labels),
    after its near-copies of real test images (the `contamination` rule) are dropped and counted.
    null: the real train split, split (seeded, per class) into a small labelled part and the
    pool (the rest, labels hidden): the embedding and the class prototypes that rank the pool
    learn from the labelled part only, never from the pool's labels. `labelled_per_class`: the
    size of that part per class; null: `real_images.few_shot` (the K shots) when few-shot is
    configured, else 10. `embedding`: `labelled_convnet` (a ConvNet trained with the judge's
    recipe on the labelled part; the default, measured better on validation: docs/results.md)
    or `pixels` (mean-centred pixels: a space that learned nothing). `per_class`: images
    retrieved per class; null: as many as the synthetic arm has (`prompts.images_per_class`).
    """

    pool: str | None = None
    per_class: int | None = Field(default=None, gt=0)
    labelled_per_class: int | None = Field(default=None, gt=0)
    embedding: Literal["labelled_convnet", "pixels"] = "labelled_convnet"

    @model_validator(mode="after")
    def _labelled_part_needs_the_train_pool(self) -> RetrievalParams:
        if self.pool is not None and self.labelled_per_class is not None:
            raise ValueError(f"retrieval.labelled_per_class {self.labelled_per_class} applies to "
                             "the train-split pool only: with retrieval.pool set the judge ranks "
                             "the pool; remove labelled_per_class or set pool: null")
        return self

    def labelled(self, few_shot: int | None) -> int:
        """Labelled images per class held out of the train-split pool."""
        return self.labelled_per_class or few_shot or DEFAULT_LABELLED_PER_CLASS


DEFAULT_LABELLED_PER_CLASS = 10
