"""The dataset-distillation evaluation protocol: fresh networks trained on a distilled set.

As the DD papers do (and their code, `evaluate_synset` in VICO-UoE/DatasetCondensation and
mtt-distillation): each evaluation network starts from a fresh seeded initialisation, trains on
the distilled images only, with SGD (momentum 0.9, weight decay 5e-4, batch 256), the learning
rate divided by 10 once after half the epochs, and DSA with parameters drawn per image; it is
then tested on real held-out images. Deviations, one by one:

- epochs: 300 by default (`distilled_set.eval.epochs`; the reference runs 1000 + 1; on digits
  300 gives the same accuracy within the spread of 5 networks, in a third of the time).
- networks: 5 per distilled set by default (`distilled_set.eval_models`; reference 20).
- spread: the sample std (ddof 1) over all networks and repeats (the reference prints the
  population std over its networks of one distilled set).
- DSA: strategy without flip for digits, `fill` −1; every draw seeded.

Learned images are float32 in the model space and are used as they are (never rounded to uint8
for training); soft labels train with the cross-entropy against the soft targets. A learned
step size (`mtt`, `datm`: the cell's `learned_lr`, stored with every repeat) is the evaluation
learning rate when passed as `learned_lr`, as mtt-distillation does (`args.lr_net = syn_lr`);
every other cell trains at `learning_rate`. The rate used is in each network's history.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.nn import functional as F

from synthfactory.ops.distillation.dsa import DEFAULT_DSA, DSA
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.training.architectures import build_model


def train_network(images: np.ndarray, targets: np.ndarray, n_classes: int, *, seed: int,
                  device: torch.device, architecture: str = "convnet", width: int = 128,
                  epochs: int = 300, learning_rate: float = 0.01, batch_size: int = 256,
                  momentum: float = 0.9, weight_decay: float = 5e-4,
                  dsa: DSA | None = DEFAULT_DSA, learned_lr: float | None = None
                  ) -> tuple[torch.nn.Module, dict]:
    """Train one fresh network on float32 N×C×H×W images; `targets` (N,) labels or N×K soft.

    `learned_lr` (a trajectory cell's learned step size) replaces `learning_rate` when given.
    """
    learning_rate, source = evaluation_learning_rate(learning_rate, learned_lr)
    if len(images) == 0:
        raise ValueError("cannot train an evaluation network on an empty distilled set")
    soft = targets.ndim == 2
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)
    target = torch.from_numpy(targets.astype(np.float32 if soft else np.int64)).to(device)
    channels, resolution = images.shape[1], images.shape[-1]
    torch.manual_seed(derive_seed(seed, "init"))
    net = build_model(architecture, channels=channels, n_classes=n_classes,
                      resolution=resolution, width=width).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=learning_rate, momentum=momentum,
                                weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    started = time.perf_counter()
    net.train()
    steps = 0
    for epoch in range(epochs):
        if epoch == epochs // 2 + 1:  # the reference's one step decay
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * 0.1
        order = torch.randperm(len(data), generator=generator).to(device)
        for start in range(0, len(data), batch_size):
            batch = order[start:start + batch_size]
            inputs = data[batch] if dsa is None else dsa(data[batch], generator)
            logits = net(inputs)
            if soft:
                loss = -(target[batch] * F.log_softmax(logits, 1)).sum(1).mean()
            else:
                loss = F.cross_entropy(logits, target[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    net.eval()
    return net, {"epochs": epochs, "steps": steps, "learning_rate": learning_rate,
                 "learning_rate_source": source,
                 "seconds": round(time.perf_counter() - started, 3)}


def evaluation_learning_rate(learning_rate: float, learned_lr: float | None) -> tuple[float, str]:
    """The rate an evaluation network trains at and where it came from: the distilled set's
    learned step size when it has one (mtt-distillation's `lr_net = syn_lr`), else the
    protocol's `learning_rate`."""
    if learned_lr is None:
        return float(learning_rate), "eval.learning_rate"
    if not math.isfinite(learned_lr) or learned_lr <= 0:
        raise ValueError(f"learned step size {learned_lr} cannot train an evaluation network: "
                         "the distillation diverged; set distilled_set.eval.use_learned_lr "
                         "false to evaluate at eval.learning_rate")
    return float(learned_lr), "learned_lr"


@torch.no_grad()
def accuracy(net: torch.nn.Module, images: torch.Tensor, labels: np.ndarray,
             batch_size: int = 512) -> float:
    """Top-1 accuracy of `net` on float model-space images N×C×H×W."""
    net.eval()
    predictions = torch.cat([net(images[i:i + batch_size]).argmax(1).cpu()
                             for i in range(0, len(images), batch_size)])
    return float((predictions.numpy() == labels).mean())


def steps_for(n_images: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps of `train_network` (to budget a cell)."""
    return epochs * math.ceil(n_images / batch_size)
