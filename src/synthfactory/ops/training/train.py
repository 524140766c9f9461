"""Training a classifier: the seeded training loop and safetensors I/O (prediction is
`predict.py`)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.training.architectures import build_model, model_from_config
from synthfactory.ops.training.augmentation import augment
from synthfactory.ops.training.sources import InMemorySource, TrainingSource
from synthfactory.ops.training.recipes import PrecisionPlan


@dataclass(frozen=True)
class ClassifierSettings:
    """The recipe of `train_classifier` (data, seed and device aside): see its docstring.

    `architecture` is one of `architectures.ARCHITECTURES`; `width` and `depth` are the
    ConvNet's (None: follow the resolution, `architectures.default_width`/`default_depth`);
    `precision` None trains in float32 in the default layout.
    """

    epochs: int = 30
    min_steps: int = 300
    batch_size: int = 128
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int | None = 128
    depth: int | None = None
    architecture: str = "convnet"
    augmentation: bool = True
    flip: bool = False
    label_smoothing: float = 0.0
    precision: PrecisionPlan | None = None
    # The optimizer steps of a budget shared by the compared arms (ops/training/budget.py):
    # set, it replaces max(min_steps, epochs × steps per pass).
    steps: int | None = None


def train_classifier(images: np.ndarray | TrainingSource, targets: np.ndarray | None,
                     n_classes: int, settings: ClassifierSettings, *, seed: int,
                     device: torch.device, log: Callable[[str], None] | None = None,
                     wrap: Callable[[nn.Module], nn.Module] | None = None,
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """Train a classifier from scratch on uint8 images; `targets` are labels (N,) or soft (N×K).

    `images` may instead be a source of batches (`sources.ShardSource`: shards streamed from disk,
    one rank's share under DDP), with `targets` None. `wrap` wraps the model for the training
    steps (DistributedDataParallel, see `distributed.py`); the unwrapped model is returned.
    `architecture` is one of `architectures.ARCHITECTURES`; `width` and `depth` are the ConvNet's.
    `recipes.recipe_for` gives each architecture's learning rate, batch size, weight decay and
    label smoothing (applied to hard labels only: soft targets are already smooth).
    `precision` (see `recipes.precision_plan`) turns on bf16 autocast and channels-last; None is
    float32 in the default layout.

    Steps = `settings.steps` when a budget fixes them (every compared arm trains the same number:
    ops/training/budget.py), else max(min_steps, epochs × steps per pass), so a 100-image distilled
    set still gets enough updates; SGD with momentum and cosine decay. `batch_size` is the global
    batch: each of a source's `world_size` ranks takes its share. In memory, every pass over the
    data is a new seeded permutation cut into full batches: the last `n mod batch_size` images of a
    permutation are left out of that pass (the next permutation shuffles them back in), so a pass
    is `n // batch_size` steps. A streamed source runs on across passes and leaves nothing out: a
    pass is `ceil(n / batch_size)` steps. The history counts what ran: steps, steps per pass,
    passes (images drawn / images a pass uses; more than `epochs` when min_steps decides), images
    left out per pass, images drawn (`samples_seen`, the cost table's images/s) and the recipe it
    ran (learning rate, weight decay, label smoothing, precision). Deterministic on CPU for one
    seed.
    """
    source = images if targets is None else InMemorySource(images, targets)
    soft = source.soft
    if soft and source.n_targets != n_classes:
        raise ValueError(f"soft targets have {source.n_targets} columns, expected {n_classes}")
    batch_size = min(settings.batch_size, source.n_samples)
    if batch_size % source.world_size:
        raise ValueError(f"classifiers.batch_size {batch_size} must be a multiple of "
                         f"runtime.devices {source.world_size} (each device takes an equal share)")
    # InMemorySource drops the partial batch of each permutation; a stream does not.
    left_out = source.n_samples % batch_size if isinstance(source, InMemorySource) else 0
    per_pass = math.ceil((source.n_samples - left_out) / batch_size)
    total_steps = (settings.steps if settings.steps is not None
                   else max(settings.min_steps, settings.epochs * per_pass))
    if total_steps < 1:
        raise ValueError(f"a classifier needs at least one optimizer step, got {total_steps} "
                         "(classifiers.epochs/min_steps or the budget's steps)")
    plan = settings.precision or PrecisionPlan(autocast=None, channels_last=False)
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(settings.architecture, channels=source.channels, n_classes=n_classes,
                        resolution=source.resolution, width=settings.width, depth=settings.depth)
    model = model.to(device, memory_format=layout)
    trained = model if wrap is None else wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate,
                                momentum=settings.momentum, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    # Rank 0 (and a single process) keeps the single-process stream of augmentations.
    generator = torch.Generator().manual_seed(
        derive_seed(seed, "batches", *([source.rank] if source.rank else [])))
    log_every = max(1, total_steps // 20)
    losses: list[list[float]] = []
    started = time.perf_counter()
    model.train()
    batches = source.batches(batch_size // source.world_size, generator, device)
    for step in range(total_steps):
        inputs, batch_targets = next(batches)
        if settings.augmentation:
            inputs = augment(inputs.cpu(), generator, flip=settings.flip).to(device)
        inputs = inputs.contiguous(memory_format=layout)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=plan.autocast is not None):
            logits = trained(inputs)
        # The loss in float32 whatever the autocast: a bf16 log-softmax loses the small terms.
        logits = logits.float()
        if soft:
            loss = -(batch_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
        else:
            loss = F.cross_entropy(logits, batch_targets,
                                   label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == total_steps - 1:
            losses.append([step, round(loss.item(), 6)])
            if log is not None:
                log(f"step {step + 1}/{total_steps}: loss {loss.item():.4f}")
    batches.close()  # a streamed source stops its loader workers
    model.eval()
    train_accuracy, measured_on = source.accuracy(model, device)
    history = {"steps": total_steps, "batch_size": batch_size, "steps_per_pass": per_pass,
               "passes": round(total_steps * batch_size / (source.n_samples - left_out), 2),
               "left_out_per_pass": left_out, "samples_seen": total_steps * batch_size,
               "learning_rate": settings.learning_rate, "weight_decay": settings.weight_decay,
               "label_smoothing": 0.0 if soft else settings.label_smoothing,
               "precision": plan.describe(), "loss": losses, "train_accuracy": train_accuracy,
               "train_accuracy_samples": measured_on,
               "seconds": round(time.perf_counter() - started, 3)}
    return model, history


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
