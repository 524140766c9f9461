"""The judge that scores synthetic images: the embedded ConvNet or a pretrained CLIP model.

Both give class probabilities (the ConvNet's softmax; CLIP's zero-shot softmax over one text
embedding per class, averaged over prompt templates) and image features (the ConvNet's
penultimate layer; CLIP's normalised image embedding) for herding and k-center (near-copies
are found in pixel space: `filters.dedup_features`). CLIP also scores each image against its
own prompt (cosine similarity: the CLIP score).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synthfactory.ops.curation import JUDGE_JSON, JUDGE_WEIGHTS
from synthfactory.ops.generation.pretrained import check_unchanged
from synthfactory.ops.training.predict import embed, predict_proba
from synthfactory.ops.training.train import load_classifier

CLASS_EMBEDDINGS = "class_embeddings.safetensors"


class Judge(Protocol):
    """What the curation assets need from a judge."""

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """N×K class probabilities of uint8 N×H×W×C images."""
        ...

    def embed(self, images: np.ndarray) -> np.ndarray:
        """N×D image features."""
        ...

    def embed_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable features of model-space images (float N×C×H×W in [-1, 1])."""
        ...


class ConvNetJudge:
    """The ConvNet trained on real images (the embedded default)."""

    def __init__(self, directory: Path, device: torch.device) -> None:
        # Frozen: distribution matching backpropagates through it to the images only.
        self.model = load_classifier(directory / JUDGE_WEIGHTS, device).requires_grad_(False)
        self.device = device

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Softmax of the ConvNet."""
        return predict_proba(self.model, images, device=self.device)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Penultimate ConvNet features."""
        return embed(self.model, images, device=self.device)

    def embed_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate ConvNet features, differentiable (for distribution matching)."""
        self.model.eval()
        return self.model.embed(images)


class ClipJudge:
    """A CLIP model (transformers) loaded from a local directory, safetensors only."""

    def __init__(self, path: Path, device: torch.device, batch_size: int = 64) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
        self.model = self.model.to(device).eval().requires_grad_(False)
        # A processor has no weights; use_safetensors keeps every from_pretrained call uniform
        # (the source scan in tests/test_untrusted.py requires it everywhere).
        self.processor = CLIPProcessor.from_pretrained(path, local_files_only=True,
                                                       use_safetensors=True)
        self.device = device
        self.batch_size = batch_size
        self.class_embeddings: torch.Tensor | None = None

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """L2-normalised CLIP image embeddings (grey images are repeated to RGB)."""
        rgb = np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images
        chunks = []
        for start in range(0, len(rgb), self.batch_size):
            pixels = self.processor(images=list(rgb[start:start + self.batch_size]),
                                    return_tensors="pt")["pixel_values"].to(self.device)
            chunks.append(_unit(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        return torch.cat(chunks).numpy()

    def embed_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised CLIP image embeddings of model-space images, differentiable.

        The processor's steps (resize to the crop size, scale to [0, 1], normalise with its mean
        and std) done in torch, so that distribution matching can optimise images against CLIP
        features.
        """
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        crop = self.processor.image_processor.crop_size
        pixels = torch.nn.functional.interpolate(
            (images + 1.0) / 2.0, size=(crop["height"], crop["width"]), mode="bicubic",
            align_corners=False)
        mean = torch.tensor(self.processor.image_processor.image_mean, device=images.device)
        std = torch.tensor(self.processor.image_processor.image_std, device=images.device)
        pixels = (pixels - mean[None, :, None, None]) / std[None, :, None, None]
        return _unit(self.model.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised CLIP text embeddings."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.processor(text=list(texts[start:start + self.batch_size]),
                                    return_tensors="pt", padding=True, truncation=True)
            tokens = {k: v.to(self.device) for k, v in tokens.items()}
            chunks.append(_unit(self.model.get_text_features(**tokens)).float().cpu())
        return torch.cat(chunks).numpy()

    def class_text_embeddings(self, class_texts: Sequence[str],
                              templates: Sequence[str]) -> np.ndarray:
        """One normalised embedding per class: the mean over templates (prompt ensembling)."""
        per_template = np.stack([self.embed_texts([t.format(name=name) for name in class_texts])
                                 for t in templates])
        mean = per_template.mean(axis=0)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    def use_class_embeddings(self, embeddings: np.ndarray) -> None:
        """Set the class text embeddings that zero-shot probabilities compare against."""
        self.class_embeddings = torch.from_numpy(embeddings)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Zero-shot softmax over the classes, at CLIP's learned temperature."""
        return self.zero_shot(self.embed(images))

    def zero_shot(self, image_embeddings: np.ndarray) -> np.ndarray:
        """Zero-shot probabilities of already computed image embeddings."""
        if self.class_embeddings is None:
            raise RuntimeError("class embeddings are not set: call use_class_embeddings first")
        scale = float(self.model.logit_scale.detach().exp())
        logits = scale * torch.from_numpy(image_embeddings) @ self.class_embeddings.T
        return torch.softmax(logits, dim=1).numpy()

    def prompt_scores(self, image_embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """CLIP score of each image with its own prompt: the cosine of the two embeddings."""
        text_embeddings = self.embed_texts(texts)
        return np.sum(image_embeddings * text_embeddings, axis=1)


def _unit(output: Any) -> torch.Tensor:
    """L2-normalised features from a `get_*_features` output (a tensor, or a model output whose
    pooled output they are, depending on the transformers version)."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor / tensor.norm(dim=-1, keepdim=True)


def save_clip_judge(directory: Path, record: dict[str, Any], class_embeddings: np.ndarray) -> None:
    """Write the class embeddings (safetensors), then `judge.json` last."""
    save_file({"class_embeddings": torch.from_numpy(np.ascontiguousarray(class_embeddings))},
              str(directory / CLASS_EMBEDDINGS))
    (directory / JUDGE_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def load_judge(directory: Path, device: torch.device, batch_size: int = 64) -> ConvNetJudge | ClipJudge:
    """The judge a `judge` directory records."""
    info_path = directory / JUDGE_JSON
    if not info_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {JUDGE_JSON}: materialize 'judge' first")
    record = json.loads(info_path.read_text())
    if record.get("kind") != "clip":
        return ConvNetJudge(directory, device)
    judge = ClipJudge(check_unchanged(record, what="judge.model"), device, batch_size)
    judge.use_class_embeddings(load_file(str(directory / CLASS_EMBEDDINGS))["class_embeddings"]
                               .numpy())
    return judge
