"""Turning prompt records into shard samples, streamed batch by batch, bad images handled.

Both backends (the embedded DDPM and a pretrained text-to-image pipeline) render a batch of
records with given seeds and say, per image, whether it came out NaN/inf or black. Such an
image is regenerated with a new seed derived from its own (up to `max_attempts` tries) or
dropped, as configured — never kept — and every case is counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from synthfactory.ops.data.images import to_square
from synthfactory.ops.data.prompts import PromptRecord
from synthfactory.ops.generation import ADAPTER_JSON, GENERATOR_JSON
from synthfactory.ops.generation.samplers import SamplerSettings
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.shards import Sample

BAD_IMAGE_POLICIES = ("regenerate", "drop")


class ImageBackend(Protocol):
    """What `generate_samples` needs from a generator."""

    @property
    def digest(self) -> str:
        """Content digest of the model's weights."""
        ...

    def render(self, records: Sequence[PromptRecord], seeds: Sequence[int],
               settings: SamplerSettings) -> tuple[np.ndarray, list[str | None]]:
        """uint8 N×H×W×C images and, per image, None or the problem (`nonfinite`, `black`)."""
        ...


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of the `attempt`-th try of an image (attempt 0 is the record's own seed)."""
    return seed if attempt == 0 else derive_seed(seed, "retry", attempt)


def generate_samples(generator: ImageBackend, records: Sequence[PromptRecord], *, batch_size: int,
                     settings: SamplerSettings, bad_images: str = "regenerate",
                     max_attempts: int = 3, counts: Counter[str] | None = None,
                     image_shape: tuple[int, int, int] | None = None) -> Iterator[Sample]:
    """Yield one sample per good image, generating `batch_size` at a time (memory stays flat).

    `counts` (if given) receives `regenerated:<problem>` per retried image and
    `dropped:<problem>` per image given up on. With `image_shape` (the real images' H×W×C),
    images of another shape are centre-cropped and resized to it exactly as real images are,
    so that every arm trains and tests at one resolution (a 512-pixel Stable Diffusion image
    for a 32-pixel CIFAR test set).
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise ValueError(f"synthetic_shards.bad_images {bad_images!r} is not one of "
                         f"{', '.join(BAD_IMAGE_POLICIES)}")
    counts = Counter() if counts is None else counts
    sampler = {**settings.to_json(), "eta": 0.0, "batch_size": batch_size}
    for start in range(0, len(records), batch_size):
        batch = list(records[start:start + batch_size])
        images, problems = generator.render(batch, [r.seed for r in batch], settings)
        attempts = [0] * len(batch)
        images = list(images)
        for attempt in range(1, max_attempts if bad_images == "regenerate" else 1):
            retry = [i for i, problem in enumerate(problems) if problem is not None]
            if not retry:
                break
            for i in retry:
                counts[f"regenerated:{problems[i]}"] += 1
            again, again_problems = generator.render(
                [batch[i] for i in retry], [attempt_seed(batch[i].seed, attempt) for i in retry],
                settings)
            for i, image, problem in zip(retry, again, again_problems, strict=True):
                images[i], problems[i], attempts[i] = image, problem, attempt
        for record, image, problem, attempt in zip(batch, images, problems, attempts, strict=True):
            if problem is not None:
                counts[f"dropped:{problem}"] += 1
                continue
            meta = {"prompt": record.to_json(), "sampler": sampler,
                    "generator_digest": generator.digest}
            if image_shape is not None and image.shape != image_shape:
                meta["generated_shape"] = list(image.shape)
                image = fit_image(image, image_shape)
            if attempt:
                meta["attempt"] = {"number": attempt, "seed": attempt_seed(record.seed, attempt)}
            yield Sample(key=record.key, image=image, label=record.class_id, meta=meta)


def fit_image(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A uint8 H×W×C image converted to `shape` (square H = W, 1 or 3 channels)."""
    height, width, channels = shape
    if height != width:
        raise ValueError(f"real image shape {shape} is not square; real images are stored square")
    pixels = image[:, :, 0] if image.shape[2] == 1 else image
    return to_square(Image.fromarray(pixels), height, channels)


def open_generator(directory: Path, *, backend: str, device: torch.device, dtype: torch.dtype,
                   compile_model: bool = False, lora: dict | None = None) -> ImageBackend:
    """The generator a `generator` directory records, loaded for sampling.

    `backend` is the configured one: a directory made by another backend is an error, not a
    surprise. `lora` (`{path, scale, digest}`, e.g. the `generator_adapter` asset's weights)
    replaces the record's LoRA: it is fused into the pipeline and its digest joins the
    generator's.
    """
    info_path = directory / GENERATOR_JSON
    if not info_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {GENERATOR_JSON}: materialize the "
                                "'generator' asset first")
    record = json.loads(info_path.read_text())
    if record.get("backend") != backend:
        raise ValueError(f"generator.backend is {backend!r} but {directory} holds a "
                         f"{record.get('backend')!r} generator: materialize 'generator' again")
    if lora is not None:
        if backend != "diffusers":
            raise ValueError(f"a LoRA adapter needs the diffusers backend, not {backend!r}")
        record = {**record, "lora": lora}
    if backend == "diffusers":
        # deferred: text2image imports transformers, which only this backend needs
        from synthfactory.ops.generation.text2image import Text2ImageGenerator

        return Text2ImageGenerator(record, device, dtype, compile_model=compile_model)
    # deferred: ddpm imports diffusers' UNet2DModel, which only this backend needs
    from synthfactory.ops.generation.ddpm import DdpmGenerator

    return DdpmGenerator(directory, device, dtype)


def read_adapter(directory: Path) -> dict[str, Any]:
    """A finished `generator_adapter` directory as the `lora` entry of `open_generator`:
    the weights' path, the scale they are fused at, and their sha256."""
    info_path = directory / ADAPTER_JSON
    if not info_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {ADAPTER_JSON}: materialize "
                                "'generator_adapter' first")
    info = json.loads(info_path.read_text())
    return {"path": str((directory / info["weights"]).resolve()), "scale": info["scale"],
            "digest": info["digest"]}
