"""Using a trained classifier: softmax probabilities and penultimate features of uint8 images,
in batches on the model's device. A leaf of the training package: the training sources measure
accuracy with it, and the judge, evaluation and refinement predict with it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synthfactory.ops.tensors import to_model_space


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, *, device: torch.device,
                  batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities N×K of uint8 images."""
    model.eval()
    outputs = [F.softmax(model(to_model_space(images[i:i + batch_size]).to(device)), dim=1).cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(outputs).numpy()


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray, *, device: torch.device,
          batch_size: int = 512) -> np.ndarray:
    """Penultimate features N×D of uint8 images (the judge's feature space)."""
    model.eval()
    outputs = [model.embed(to_model_space(images[i:i + batch_size]).to(device)).cpu()
               for i in range(0, len(images), batch_size)]
    return torch.cat(outputs).numpy()
