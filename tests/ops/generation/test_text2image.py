"""The diffusers backend on a tiny Stable Diffusion pipeline and the CLIP judge on a tiny CLIP.

Both are real models built from config and saved with `save_pretrained`; the code under test
loads them exactly as it loads downloaded ones.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.curation.judges import ClipJudge
from synthfactory.ops.data.prompts import PromptRecord, expand_prompts
from synthfactory.ops.generation.generate import attempt_seed, fit_image, generate_samples
from synthfactory.ops.generation.samplers import SAMPLERS, SamplerSettings
from synthfactory.ops.generation.text2image import Text2ImageGenerator, describe_pipeline
from tests.support import class_images

CPU = torch.device("cpu")
SETTINGS = SamplerSettings(steps=2, scheduler="default", height=16, width=16)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipeline(tiny_sd_dir: Path) -> Text2ImageGenerator:
    return Text2ImageGenerator(describe_pipeline(str(tiny_sd_dir)), CPU, torch.float32)


def _records(per_class: int = 3, guidance: Sequence[float] = (1.0, 3.0)) -> list[PromptRecord]:
    return expand_prompts(["cat", "dog"], per_class, ["a photo of a {name}"], list(guidance),
                          "blurry", 0)


def _images(generator: Text2ImageGenerator, records: list[PromptRecord], batch_size: int,
            settings: SamplerSettings = SETTINGS) -> np.ndarray:
    return np.stack([s.image for s in generate_samples(generator, records, batch_size=batch_size,
                                                       settings=settings)])


def test_generator_record_names_source_and_digest(tiny_sd_dir: Path) -> None:
    record = describe_pipeline(str(tiny_sd_dir))
    assert record["backend"] == "diffusers" and record["pipeline_class"] == "StableDiffusionPipeline"
    assert record["path"] == str(tiny_sd_dir.resolve()) and len(record["digest"]) == 64
    assert "unet/diffusion_pytorch_model.safetensors" in record["files"]
    assert record == describe_pipeline(str(tiny_sd_dir))  # the digest is of content: stable


def test_images_are_seeded_per_image_not_per_batch(pipeline: Text2ImageGenerator) -> None:
    records = _records()
    whole = _images(pipeline, records, batch_size=6)
    assert whole.shape == (6, 16, 16, 3) and whole.dtype == np.uint8
    np.testing.assert_array_equal(whole, _images(pipeline, records, batch_size=4))
    np.testing.assert_array_equal(whole[2:3], _images(pipeline, records[2:3], batch_size=1))
    assert len({image.tobytes() for image in whole}) == 6


def test_samples_record_prompt_sampler_and_generator(pipeline: Text2ImageGenerator) -> None:
    sample = next(generate_samples(pipeline, _records(), batch_size=2, settings=SETTINGS))
    assert sample.meta["prompt"]["text"] == "a photo of a cat"
    assert sample.meta["prompt"]["negative_text"] == "blurry"
    assert sample.meta["sampler"]["steps"] == 2 and sample.meta["sampler"]["height"] == 16
    assert sample.meta["generator_digest"] == pipeline.digest


def test_guidance_and_size_change_the_images(pipeline: Text2ImageGenerator) -> None:
    low = _images(pipeline, _records(guidance=[1.0]), 6)
    high = _images(pipeline, _records(guidance=[7.5]), 6)
    assert not np.array_equal(low, high)
    bigger = _images(pipeline, _records(), 6, SamplerSettings(2, "default", 24, 32))
    assert bigger.shape == (6, 24, 32, 3)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_scheduler_renders(pipeline: Text2ImageGenerator, name: str) -> None:
    images = _images(pipeline, _records(1), 2, SamplerSettings(3, name, 16, 16))
    assert images.shape == (2, 16, 16, 3)
    assert type(pipeline.pipe.scheduler).__name__ == SAMPLERS[name].__name__
    _images(pipeline, _records(1), 2, SamplerSettings(3, "default", 16, 16))
    assert type(pipeline.pipe.scheduler) is pipeline.default_scheduler_class  # the pipeline's own


def test_generated_images_are_fitted_to_the_real_shape(pipeline: Text2ImageGenerator) -> None:
    samples = list(generate_samples(pipeline, _records(1), batch_size=2,
                                    settings=SamplerSettings(2, "default", 24, 32),
                                    image_shape=(8, 8, 1)))
    assert [s.image.shape for s in samples] == [(8, 8, 1)] * 2
    assert samples[0].meta["generated_shape"] == [24, 32, 3]
    assert fit_image(np.zeros((24, 24, 1), np.uint8), (12, 12, 3)).shape == (12, 12, 3)


def test_half_precision_on_cpu_is_refused(tiny_sd_dir: Path) -> None:
    with pytest.raises(ValueError, match="runtime.dtype float16 on the CPU"):
        Text2ImageGenerator(describe_pipeline(str(tiny_sd_dir)), CPU, torch.float16)


def test_compile_wraps_the_denoiser(tiny_sd_dir: Path) -> None:
    compiled = Text2ImageGenerator(describe_pipeline(str(tiny_sd_dir)), CPU, torch.float32,
                                   compile_model=True)
    assert isinstance(compiled.pipe.unet, torch._dynamo.eval_frame.OptimizedModule)


def _broken_copy(tiny_sd_dir: Path, target: Path, how: str) -> Path:
    """A copy whose VAE decoder outputs NaN (`nan`) or all black (`black`) for every latent."""
    from diffusers import AutoencoderKL

    model = shutil.copytree(tiny_sd_dir, target)
    vae = AutoencoderKL.from_pretrained(model / "vae", use_safetensors=True)
    with torch.no_grad():
        if how == "nan":
            vae.decoder.conv_out.bias.fill_(float("nan"))
        else:
            vae.decoder.conv_out.weight.zero_()
            vae.decoder.conv_out.bias.fill_(-10.0)
    vae.save_pretrained(model / "vae", safe_serialization=True)
    return model


@pytest.mark.parametrize("how, problem", [("nan", "nonfinite"), ("black", "black")])
def test_broken_outputs_are_never_kept(tiny_sd_dir: Path, tmp_path: Path, how: str,
                                       problem: str) -> None:
    model = _broken_copy(tiny_sd_dir, tmp_path / how, how)
    generator = Text2ImageGenerator(describe_pipeline(str(model)), CPU, torch.float32)
    records = _records(1)
    counts: Counter[str] = Counter()
    kept = list(generate_samples(generator, records, batch_size=2, settings=SETTINGS,
                                 bad_images="regenerate", max_attempts=3, counts=counts))
    assert kept == []
    assert counts == {f"regenerated:{problem}": 4, f"dropped:{problem}": 2}
    counts.clear()
    assert list(generate_samples(generator, records, batch_size=2, settings=SETTINGS,
                                 bad_images="drop", counts=counts)) == []
    assert counts == {f"dropped:{problem}": 2}


class SeedSensitiveBackend:
    """A backend that renders black exactly for the seeds in `bad` (others: grey of the seed)."""

    digest = "seed-sensitive"

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: list[list[int]] = []

    def render(self, records: Sequence[PromptRecord], seeds: Sequence[int],
               settings: SamplerSettings) -> tuple[np.ndarray, list[str | None]]:
        self.calls.append(list(seeds))
        images = np.stack([np.full((4, 4, 3), 1 + seed % 250, np.uint8) for seed in seeds])
        return images, ["black" if seed in self.bad else None for seed in seeds]


def test_regeneration_retries_only_bad_images_with_derived_seeds() -> None:
    records = _records(2)
    flaky, hopeless = records[0], records[3]
    bad = {flaky.seed, hopeless.seed, *(attempt_seed(hopeless.seed, a) for a in range(1, 3))}
    backend = SeedSensitiveBackend(bad)
    counts: Counter[str] = Counter()
    samples = list(generate_samples(backend, records, batch_size=4, settings=SETTINGS,
                                    max_attempts=3, counts=counts))
    assert [s.key for s in samples] == [r.key for r in records if r is not hopeless]
    assert samples[0].meta["attempt"] == {"number": 1, "seed": attempt_seed(flaky.seed, 1)}
    assert "attempt" not in samples[1].meta
    assert counts == {"regenerated:black": 3, "dropped:black": 1}
    assert backend.calls[1] == [attempt_seed(flaky.seed, 1), attempt_seed(hopeless.seed, 1)]
    with pytest.raises(ValueError, match="bad_images 'keep' is not one of regenerate, drop"):
        list(generate_samples(backend, records, batch_size=4, settings=SETTINGS,
                              bad_images="keep"))


def test_lora_from_peft_is_loaded_fused_and_recorded(tiny_sd_dir: Path, tmp_path: Path,
                                                     pipeline: Text2ImageGenerator) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    # A LoRA made the way diffusers' training scripts make one, with non-zero up-projections.
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, use_safetensors=True)
    base.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in base.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "lora", safe_serialization=True,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(base.unet)))
    record = describe_pipeline(str(tiny_sd_dir), lora=str(tmp_path / "lora"), lora_scale=0.8)
    assert record["lora"]["path"].endswith("pytorch_lora_weights.safetensors")
    assert record["lora"]["scale"] == 0.8
    with_lora = Text2ImageGenerator(record, CPU, torch.float32)
    assert with_lora.digest == f"{record['digest']}+{record['lora']['digest']}"
    records = _records(1)
    assert not np.array_equal(_images(with_lora, records, 2), _images(pipeline, records, 2))


@pytest.fixture(scope="module")
def clip(tiny_clip_dir: Path) -> ClipJudge:
    judge = ClipJudge(tiny_clip_dir, CPU, batch_size=4)
    judge.use_class_embeddings(judge.class_text_embeddings(
        ["red thing", "green thing", "blue thing"], ["a photo of a {name}.", "a {name}"]))
    return judge


def test_clip_zero_shot_probabilities_and_prompt_scores(clip: ClipJudge) -> None:
    images = np.concatenate([np.stack(class_images(c, 3, 32)) for c in range(3)])
    features = clip.embed(images)
    assert features.shape == (9, 16)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    probs = clip.zero_shot(features)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, clip.predict_proba(images), atol=1e-6)
    scores = clip.prompt_scores(features, ["a photo of a red thing."] * 9)
    assert scores.shape == (9,) and np.all(np.abs(scores) <= 1.0 + 1e-6)
    grey = clip.embed(images[:, :, :, :1])  # grey images are repeated to RGB
    assert grey.shape == (9, 16)


def test_differentiable_clip_embedding_matches_the_processor(clip: ClipJudge) -> None:
    from synthfactory.ops.tensors import to_model_space

    images = np.stack(class_images(1, 4, 32))  # at CLIP's input size: no resampling differences
    through_processor = clip.embed(images)
    tensor = to_model_space(images).requires_grad_(True)
    through_torch = clip.embed_tensor(tensor)
    np.testing.assert_allclose(through_torch.detach().numpy(), through_processor, atol=1e-4)
    through_torch.sum().backward()
    assert tensor.grad is not None and tensor.grad.abs().sum() > 0
