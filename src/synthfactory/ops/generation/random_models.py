"""Real diffusers/transformers models built from config with random weights; nothing downloaded.

Tiny ones make the text-to-image path and the CLIP judge testable on a CPU in seconds; the
full-size Stable Diffusion 1.5 architecture makes GPU throughput measurable without the
weights. All are saved with `save_pretrained` (safetensors) and loaded back through the same
`from_pretrained` code that users run on real models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# The byte-level BPE alphabet of CLIP's tokenizer: printable bytes keep their character, the
# rest map to code points from 256 up. A vocabulary of these (plus end-of-word forms) with no
# merges tokenises any text character by character.
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
              *range(ord("®"), ord("ÿ") + 1)]

# Stable Diffusion 1.5's architecture (the published configs of its UNet, VAE and text encoder).
SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
SD15_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "sample_size": 512,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
SD15_TEXT: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
TINY_UNET: dict[str, Any] = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": (32, 64), "cross_attention_dim": 32, "attention_head_dim": 4,
    "norm_num_groups": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "block_out_channels": (16, 32), "norm_num_groups": 8, "sample_size": 16,
    "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2,
}
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": 77, "projection_dim": 32,
}


def write_clip_tokenizer_files(directory: Path) -> tuple[Path, Path]:
    """A character-level CLIP BPE vocabulary (vocab.json, merges.txt) in `directory`."""
    characters = list(_PRINTABLE)
    extra = 0
    for byte in range(256):
        if byte not in _PRINTABLE:
            characters.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in characters]
    vocab = {symbol: index for index, symbol in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory / "vocab.json", directory / "merges.txt"


def clip_tokenizer(work_dir: Path) -> Any:
    """A `CLIPTokenizer` over the generated vocabulary, `model_max_length=77` like CLIP's."""
    from transformers import CLIPTokenizer

    vocab, merges = write_clip_tokenizer_files(work_dir / "vocab")
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=77)


def _token_ids(tokenizer: Any) -> dict[str, int]:
    """Vocabulary size and special token ids of a text config that match the tokenizer.

    CLIP's pooled text embedding is taken at the end-of-text token, found by its id: ids left at
    OpenAI's defaults (49406/49407) would not exist in a small generated vocabulary.
    """
    return {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def build_sd_pipeline(directory: Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Save a `StableDiffusionPipeline` with random weights to `directory`; return it.

    `size` is `tiny` (a few hundred thousand parameters, 16×16 images) or `sd15` (Stable
    Diffusion 1.5's full architecture, ~1.07 B parameters, 512×512).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if size not in {"tiny", "sd15"}:
        raise ValueError(f"size {size!r} is not one of tiny, sd15")
    unet_config, vae_config, text_config = ((TINY_UNET, TINY_VAE, TINY_TEXT) if size == "tiny"
                                            else (SD15_UNET, SD15_VAE, SD15_TEXT))
    tokenizer = clip_tokenizer(directory.parent / f".{directory.name}-tokenizer")
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(**unet_config), vae=AutoencoderKL(**vae_config),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config, **_token_ids(tokenizer))),
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def build_clip(directory: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny `CLIPModel` + processor (tokenizer and image processor) to `directory`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = clip_tokenizer(directory.parent / f".{directory.name}-tokenizer")
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={**TINY_TEXT, **_token_ids(tokenizer)},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16)
    CLIPModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory
