"""Pretrained model directories: local or hub-cached, safetensors only, changes noticed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from synthfactory.ops.generation.pretrained import UnsafeWeightsError, check_unchanged, resolve_model
from synthfactory.ops.generation.text2image import describe_pipeline

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _pickle_only_pipeline(directory: Path) -> Path:
    """A pipeline-shaped directory whose UNet weights are a pickle file (never loaded here)."""
    (directory / "unet").mkdir(parents=True)
    (directory / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (directory / "unet" / "config.json").write_text("{}")
    # Not a real pickle: refusing must not depend on (or involve) reading the file.
    (directory / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04 not executed")
    return directory


def test_a_pickle_only_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    model = _pickle_only_pipeline(tmp_path / "model")
    with pytest.raises(UnsafeWeightsError) as error:
        describe_pipeline(str(model))
    message = str(error.value)
    assert str(model / "unet" / "diffusion_pytorch_model.bin") in message
    assert "safetensors are required" in message


def test_a_ckpt_file_is_refused_as_a_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"is a file \(a pickle checkpoint: synthfactory loads "
                                         r"safetensors only\)"):
        resolve_model(str(checkpoint), what="generator.model")


def test_pickles_beside_safetensors_are_left_unread(tiny_sd_dir: Path, tmp_path: Path) -> None:
    model = shutil.copytree(tiny_sd_dir, tmp_path / "both")
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"never opened")
    record = describe_pipeline(str(model))
    assert "unet/diffusion_pytorch_model.bin" not in record["files"]
    assert record["pipeline_class"] == "StableDiffusionPipeline"


def test_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"generator.model '.*nowhere': the model directory "
                                                r"does not exist"):
        resolve_model(str(tmp_path / "nowhere"), what="generator.model")


def test_a_directory_that_is_not_a_pipeline_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no model_index.json; it is not a diffusers pipeline"):
        describe_pipeline(str(tmp_path / "empty"))


def test_a_hub_id_resolves_to_its_cached_snapshot_offline(
        tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Hugging Face cache layout as `huggingface-cli download` leaves it; no network.
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--tiny--sd"
    shutil.copytree(tiny_sd_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = resolve_model("tiny/sd", what="generator.model", local_files_only=True)
    assert source.path == (repo / "snapshots" / COMMIT).resolve()
    assert source.revision == COMMIT and source.name == "tiny/sd"
    local = resolve_model(str(tiny_sd_dir), what="generator.model").record()
    assert source.record()["digest"] == local["digest"]  # same bytes, same digest
    with pytest.raises(FileNotFoundError, match=r"'tiny/absent' \(revision main\) is neither an "
                                                r"existing directory nor in the Hugging Face cache "
                                                r".* `hf download tiny/absent`"):
        resolve_model("tiny/absent", what="generator.model", local_files_only=True)


def test_a_changed_model_is_noticed_before_loading(tiny_sd_dir: Path, tmp_path: Path) -> None:
    model = shutil.copytree(tiny_sd_dir, tmp_path / "model")
    record = resolve_model(str(model), what="generator.model").record()
    assert check_unchanged(record, what="generator.model") == model.resolve()
    (model / "unet" / "config.json").write_text((model / "unet" / "config.json").read_text() + " ")
    with pytest.raises(ValueError, match="changed since it was materialized"):
        check_unchanged(record, what="generator.model")
    shutil.rmtree(model)
    with pytest.raises(FileNotFoundError, match="is gone; materialize it again"):
        check_unchanged(record, what="generator.model")


def test_lora_weights_must_be_safetensors(tiny_sd_dir: Path, tmp_path: Path) -> None:
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.bin").write_bytes(b"pickle")
    with pytest.raises(UnsafeWeightsError, match="pytorch_lora_weights.bin holds pickle weights"):
        describe_pipeline(str(tiny_sd_dir), lora=str(lora))
    with pytest.raises(FileNotFoundError, match="generator.lora '.*missing.safetensors' does not"):
        describe_pipeline(str(tiny_sd_dir), lora=str(tmp_path / "missing.safetensors"))
