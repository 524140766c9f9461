"""Training and using a classifier: the seeded training loop, prediction, safetensors I/O."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.tensors import to_model_space
from synthfactory.ops.training.architectures import build_model, model_from_config
from synthfactory.ops.training.augmentation import augment


def train_classifier(images: np.ndarray, targets: np.ndarray, n_classes: int, *, seed: int,
                     device: torch.device, epochs: int = 30, min_steps: int = 300,
                     batch_size: int = 128, learning_rate: float = 0.01, momentum: float = 0.9,
                     weight_decay: float = 5e-4, width: int = 128, depth: int | None = None,
                     architecture: str = "convnet", augmentation: bool = True, flip: bool = False,
                     log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a classifier from scratch on uint8 images; `targets` are labels (N,) or soft (N×K).

    `architecture` is one of `architectures.ARCHITECTURES`; `width` and `depth` are the ConvNet's.

    Every pass over the data is a new seeded permutation cut into full batches: the last
    `len(images) mod batch_size` images of a permutation are left out of that pass (the next
    permutation shuffles them back in), so a pass is `len(images) // batch_size` steps. Steps
    = max(min_steps, epochs × steps per pass), so a 100-image distilled set still gets enough
    updates; SGD with momentum and cosine decay. The history counts what ran: steps, passes
    (steps / steps per pass; more than `epochs` when min_steps decides), images left out per
    pass. Deterministic on CPU for one seed.
    """
    if len(images) == 0:
        raise ValueError("cannot train a classifier on an empty set")
    soft = targets.ndim == 2
    if soft and targets.shape[1] != n_classes:
        raise ValueError(f"soft targets have {targets.shape[1]} columns, expected {n_classes}")
    data = to_model_space(images).to(device)
    target = (torch.from_numpy(targets).float() if soft
              else torch.from_numpy(targets).long()).to(device)
    hard_labels = target.argmax(1) if soft else target
    batch_size = min(batch_size, len(images))
    per_pass = len(images) // batch_size  # full batches only: see the loop below
    total_steps = max(min_steps, epochs * per_pass)
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(architecture, channels=images.shape[3], n_classes=n_classes,
                        resolution=images.shape[1], width=width, depth=depth).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum,
                                weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    log_every = max(1, total_steps // 20)
    losses: list[list[float]] = []
    started = time.perf_counter()
    model.train()
    order = torch.randperm(len(images), generator=generator)
    position = 0
    for step in range(total_steps):
        if position + batch_size > len(images):  # a new pass: a new seeded permutation
            order, position = torch.randperm(len(images), generator=generator), 0
        batch = order[position:position + batch_size].to(device)
        position += batch_size
        inputs = data[batch]
        if augmentation:
            inputs = augment(inputs.cpu(), generator, flip=flip).to(device)
        logits = model(inputs)
        if soft:
            loss = -(target[batch] * F.log_softmax(logits, dim=1)).sum(1).mean()
        else:
            loss = F.cross_entropy(logits, target[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == total_steps - 1:
            losses.append([step, round(loss.item(), 6)])
            if log is not None:
                log(f"step {step + 1}/{total_steps}: loss {loss.item():.4f}")
    model.eval()
    train_accuracy = float(np.mean(
        predict_proba(model, images, device=device).argmax(1) == hard_labels.cpu().numpy()))
    history = {"steps": total_steps, "batch_size": batch_size, "steps_per_pass": per_pass,
               "passes": round(total_steps / per_pass, 2),
               "left_out_per_pass": len(images) - per_pass * batch_size,
               "loss": losses, "train_accuracy": train_accuracy,
               "seconds": round(time.perf_counter() - started, 3)}
    return model, history


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


def save_classifier(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Save weights as safetensors with the architecture as JSON in the file's metadata."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in
             model.state_dict().items()}
    save_file(state, str(path), metadata={**(metadata or {}), "config": json.dumps(model.config)})


def load_classifier(path: Path, device: torch.device) -> nn.Module:
    """Rebuild a model saved by `save_classifier` (safetensors only: nothing is executed)."""
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights {path} do not exist: materialize the asset "
                                "that trains them first")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        config = (handle.metadata() or {}).get("config")
    if config is None:
        raise ValueError(f"{path} has no 'config' metadata: it was not written by "
                         "save_classifier")
    model = model_from_config(json.loads(config))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()
