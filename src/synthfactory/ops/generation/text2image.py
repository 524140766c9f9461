"""The pretrained text-to-image backend: a diffusers pipeline (Stable Diffusion family, SD-Turbo,
SDXL, PixArt, FLUX …) loaded with `AutoPipelineForText2Image`, safetensors only.

`describe_pipeline` makes the `generator` asset's record (source, revision, content digest,
LoRA) without loading weights; `Text2ImageGenerator` loads the recorded pipeline once per step
and renders prompt records: batched, one seeded generator per image (so an image does not
depend on its batch), guidance and negative prompts from the records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoPipelineForText2Image

from synthfactory.ops.data.prompts import PromptRecord
from synthfactory.ops.generation.pretrained import (
    PICKLE_SUFFIXES,
    UnsafeWeightsError,
    check_unchanged,
    resolve_model,
)
from synthfactory.ops.generation.samplers import DEFAULT, SamplerSettings, build_sampler
from synthfactory.ops.storage.atomic import sha256_file

# A generated image whose brightest pixel is at most this is black (e.g. a safety-checker
# blank or a collapsed sample); real photographs, even at night, have brighter pixels.
BLACK_MAX = 1.0 / 255.0


def describe_pipeline(model: str, *, revision: str | None = None, variant: str | None = None,
                      local_files_only: bool = False, lora: str | None = None,
                      lora_scale: float = 1.0) -> dict[str, Any]:
    """Resolve a pipeline (and LoRA) and return the record that `generator.json` stores.

    Checks what can be checked without loading weights: the directory is a diffusers pipeline
    (`model_index.json`) whose class diffusers knows, weights are safetensors, the LoRA file is
    a safetensors file.
    """
    source = resolve_model(model, what="generator.model", revision=revision,
                           local_files_only=local_files_only)
    index_path = source.path / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"generator.model {model!r}: {source.path} has no model_index.json; it "
                         "is not a diffusers pipeline (save it with pipeline.save_pretrained)")
    index = json.loads(index_path.read_text())
    import diffusers

    pipeline_class = str(index.get("_class_name"))
    if not hasattr(diffusers, pipeline_class):
        raise ValueError(f"generator.model {model!r}: pipeline class {pipeline_class!r} is not in "
                         f"diffusers {diffusers.__version__}; upgrade diffusers or pick another model")
    return {"backend": "diffusers", **source.record(), "pipeline_class": pipeline_class,
            "variant": variant, "lora": _describe_lora(lora, lora_scale)}


def _describe_lora(lora: str | None, scale: float) -> dict[str, Any] | None:
    """LoRA weights: a .safetensors file, or a directory holding exactly one."""
    if lora is None:
        return None
    path = Path(lora).expanduser()
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not candidates and pickles:
            raise UnsafeWeightsError(f"generator.lora: {pickles[0]} holds pickle weights; "
                                     "safetensors are required")
        if len(candidates) != 1:
            raise ValueError(f"generator.lora {lora!r} holds {len(candidates)} .safetensors files; "
                             "name the one to load")
        path = candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"generator.lora {lora!r} does not exist")
    if path.suffix != ".safetensors":
        raise UnsafeWeightsError(f"generator.lora {lora!r} is not a .safetensors file; pickle "
                                 "weights are refused (convert it to safetensors)")
    return {"path": str(path.resolve()), "scale": scale, "digest": sha256_file(path)}


class Text2ImageGenerator:
    """A pretrained pipeline loaded from a `generator.json` record, ready to render records."""

    def __init__(self, record: dict[str, Any], device: torch.device, dtype: torch.dtype, *,
                 compile_model: bool = False) -> None:
        path = check_unchanged(record, what="generator.model")
        if device.type == "cpu" and dtype != torch.float32:
            raise ValueError(f"runtime.dtype {str(dtype).removeprefix('torch.')} on the CPU: "
                             "half precision is for CUDA; use runtime.dtype: float32 on a CPU")
        self.record = record
        self.device = device
        self.pipe = AutoPipelineForText2Image.from_pretrained(
            path, dtype=dtype, use_safetensors=True, local_files_only=True,
            variant=record.get("variant"))
        self.pipe.set_progress_bar_config(disable=True)
        lora = record.get("lora")
        if lora:
            self.pipe.load_lora_weights(str(Path(lora["path"]).parent),
                                        weight_name=Path(lora["path"]).name,
                                        adapter_name="synthfactory")
            # Fused into the weights: no per-step LoRA overhead while sampling.
            self.pipe.fuse_lora(lora_scale=lora["scale"])
        self.pipe.to(device)
        # The pipeline's own sampler (`scheduler: default`), kept before any other replaces it.
        self.default_scheduler_class = type(self.pipe.scheduler)
        self.default_scheduler_config = self.pipe.scheduler.config
        if compile_model:
            denoiser = "unet" if hasattr(self.pipe, "unet") else "transformer"
            setattr(self.pipe, denoiser, torch.compile(getattr(self.pipe, denoiser)))

    @property
    def digest(self) -> str:
        """Digest of the pipeline's files (and of the LoRA, when one is fused in)."""
        lora = self.record.get("lora")
        return self.record["digest"] if not lora else f"{self.record['digest']}+{lora['digest']}"

    def render(self, records: Sequence[PromptRecord], seeds: Sequence[int],
               settings: SamplerSettings) -> tuple[np.ndarray, list[str | None]]:
        """Images for the records with the given seeds, and per image None, `nonfinite` or `black`.

        Records are rendered in runs of equal guidance (a pipeline call takes one scale); each
        image has its own CPU generator, so it is the same whatever batch it lands in.
        """
        self.pipe.scheduler = (build_sampler(settings.scheduler, self.default_scheduler_config)
                               if settings.scheduler != DEFAULT
                               else self.default_scheduler_class.from_config(
                                   self.default_scheduler_config))
        outputs: list[np.ndarray] = []
        problems: list[str | None] = []
        positions = list(range(len(records)))
        for scale, group in groupby(positions, key=lambda i: records[i].guidance):
            members = list(group)
            images, flags = self._call([records[i] for i in members], [seeds[i] for i in members],
                                       scale, settings)
            outputs.extend(images)
            problems.extend(flags)
        return np.stack(outputs), problems

    @torch.no_grad()
    def _call(self, records: list[PromptRecord], seeds: list[int], scale: float,
              settings: SamplerSettings) -> tuple[list[np.ndarray], list[str | None]]:
        negatives = [r.negative_text for r in records]
        result = self.pipe(
            prompt=[r.text for r in records],
            negative_prompt=negatives if any(negatives) else None,
            num_inference_steps=settings.steps, guidance_scale=scale,
            height=settings.height, width=settings.width,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            output_type="np")
        floats = np.asarray(result.images, dtype=np.float32)
        nsfw = getattr(result, "nsfw_content_detected", None) or [False] * len(records)
        images, problems = [], []
        for image, flagged in zip(floats, nsfw, strict=True):
            problem: str | None = None
            if not np.isfinite(image).all():
                problem = "nonfinite"
            elif flagged:
                problem = "nsfw"
            elif image.max() <= BLACK_MAX:
                problem = "black"
            clean = np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
            images.append(np.round(np.clip(clean, 0.0, 1.0) * 255.0).astype(np.uint8))
            problems.append(problem)
        return images, problems
