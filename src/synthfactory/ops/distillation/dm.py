"""Distribution matching (Zhao & Bilen, WACV 2023): learn images whose embeddings match the source.

Synthetic images are learned so that their mean embedding under freshly, randomly initialised
ConvNets matches the mean embedding of the source images of their class, under the same random
augmentation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from synthfactory.ops.distillation.coresets import class_members, select_random
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.tensors import to_model_space, to_uint8
from synthfactory.ops.training.architectures import ConvNet
from synthfactory.ops.training.augmentation import random_affine, warp


def _random_net(channels: int, n_classes: int, resolution: int, width: int, depth: int | None,
                seed: int, device: torch.device) -> ConvNet:
    torch.manual_seed(seed)
    net = ConvNet(channels, n_classes, resolution, width=width, depth=depth).to(device)
    return net.requires_grad_(False)


def distribution_matching(images: np.ndarray, labels: np.ndarray, n_classes: int, ipc: int, *,
                          seed: int, device: torch.device, iterations: int = 1000,
                          learning_rate: float = 1.0, batch_real: int = 256, width: int = 128,
                          depth: int | None = None, init_indices: np.ndarray | None = None,
                          log: Callable[[str], None] | None = None,
                          log_every: int = 100,
                          features: Callable[[torch.Tensor], torch.Tensor] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Learn `ipc` images per class by distribution matching; return uint8 images, labels, history.

    Initialised from real samples of each class (seeded random ones, or `init_indices`). Every
    iteration draws a new random ConvNet and, per class, a batch of up to `batch_real` source
    images and one random augmentation applied to both sides (siamese), and lowers
    Σ_c ‖mean embed(real_c) − mean embed(syn_c)‖². With `features` (a fixed, differentiable
    embedding such as the CLIP judge's), that embedding replaces the random ConvNets.
    """
    members = class_members(labels, ipc)
    init = (select_random(labels, ipc, derive_seed(seed, "init")) if init_indices is None
            else np.asarray(init_indices))
    if len(init) != ipc * len(members):
        raise ValueError(f"init_indices has {len(init)} entries, expected ipc × classes = "
                         f"{ipc * len(members)}")
    source = to_model_space(images).to(device)
    synthetic = to_model_space(images[init]).to(device).requires_grad_(True)
    synthetic_labels = labels[init]
    optimizer = torch.optim.SGD([synthetic], lr=learning_rate, momentum=0.5)
    generator = torch.Generator().manual_seed(derive_seed(seed, "dm"))
    channels, resolution = images.shape[3], images.shape[1]
    losses: list[list[float]] = []
    started = time.perf_counter()
    for iteration in range(iterations):
        embed = features if features is not None else _random_net(
            channels, n_classes, resolution, width, depth, derive_seed(seed, "net", iteration),
            device).embed
        loss = torch.zeros((), device=device)
        for position, pool in enumerate(members):
            pick = torch.randperm(len(pool), generator=generator)[:batch_real].numpy()
            theta = random_affine(1, resolution, generator, flip=False)
            real = warp(source[pool[pick]], theta)
            syn = warp(synthetic[position * ipc:(position + 1) * ipc], theta)
            with torch.no_grad():
                real_mean = embed(real).mean(0)
            loss = loss + ((real_mean - embed(syn).mean(0)) ** 2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            synthetic.clamp_(-1, 1)
        losses.append([iteration, round(loss.item(), 6)])
        if log is not None and (iteration % log_every == 0 or iteration == iterations - 1):
            log(f"dm iteration {iteration + 1}/{iterations}: matching loss {loss.item():.4f}, "
                f"{time.perf_counter() - started:.0f}s")
    tenth = max(1, iterations // 10)
    values = [value for _, value in losses]
    history = {"loss": losses, "initial_loss": float(np.mean(values[:tenth])),
               "final_loss": float(np.mean(values[-tenth:])),
               "seconds": round(time.perf_counter() - started, 3), "iterations": iterations}
    return to_uint8(synthetic), synthetic_labels.astype(np.int64), history


@torch.no_grad()
def matching_loss(images_real: np.ndarray, labels_real: np.ndarray, images_syn: np.ndarray,
                  labels_syn: np.ndarray, n_classes: int, *, seed: int, n_nets: int,
                  device: torch.device, width: int = 128, depth: int | None = None) -> float:
    """Mean over `n_nets` fixed random ConvNets of Σ_c ‖mean embed(real_c) − mean embed(syn_c)‖².

    No augmentation: a deterministic yardstick to compare image sets (e.g. DM output against its
    initial images).
    """
    real = to_model_space(images_real).to(device)
    syn = to_model_space(images_syn).to(device)
    channels, resolution = images_real.shape[3], images_real.shape[1]
    total = 0.0
    for index in range(n_nets):
        net = _random_net(channels, n_classes, resolution, width, depth,
                          derive_seed(seed, "yardstick", index), device)
        real_embedding, syn_embedding = net.embed(real), net.embed(syn)
        for label in np.unique(labels_syn):
            real_mean = real_embedding[torch.from_numpy(labels_real == label)].mean(0)
            syn_mean = syn_embedding[torch.from_numpy(labels_syn == label)].mean(0)
            total += float(((real_mean - syn_mean) ** 2).sum())
    return total / n_nets

