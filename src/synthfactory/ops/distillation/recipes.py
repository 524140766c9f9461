"""One distilled set of one cell: dispatch to a coreset or a learned method, uniform output.

Every result is float32 images in the model space (N×C×H×W), hard labels, optional soft
targets, and where each image came from — so evaluation, storage and export treat selected and
learned sets alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from synthfactory.ops.distillation.cells import TRAJECTORY_METHODS, WHOLE, Cell
from synthfactory.ops.distillation.coresets import select_herding, select_kcenter, select_random
from synthfactory.ops.distillation.dsa import DSA
from synthfactory.ops.distillation.matching import (DcSettings, DmSettings, GmInitSettings,
                                                    distribution_matching, gradient_matching,
                                                    gradient_matching_at_init)
from synthfactory.ops.distillation.trajectories import MttSettings, trajectory_matching
from synthfactory.ops.tensors import to_model_space

Log = Callable[[str], None]


@dataclass
class DistilledRepeat:
    """One distilled set: float32 model-space images N×C×H×W, labels, optional soft targets."""

    images: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray | None = None
    learned_lr: float | None = None
    origins: list[str] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)

    @property
    def targets(self) -> np.ndarray:
        """What evaluation networks train on: the soft labels when there are, else labels."""
        return self.soft_labels if self.soft_labels is not None else self.labels


@dataclass(frozen=True)
class MethodSettings:
    """The hyperparameters of every method (the `distilled_set` params, as plain values);
    `gm_init` empty takes `GmInitSettings`' defaults."""

    dm: dict[str, Any]
    dc: dict[str, Any]
    mtt: dict[str, Any]
    architecture: str = "convnet"
    width: int = 128
    gm_init: dict[str, Any] = field(default_factory=dict)

    def section(self, method: str) -> dict[str, Any]:
        """The settings of `method` as they run: mtt's for mtt and datm, none for a
        selection (random, herding, kcenter)."""
        if method in TRAJECTORY_METHODS:
            return self.mtt
        return {"dm": self.dm, "dc": self.dc, "gm_init": self.gm_init}.get(method, {})


def distill(cell: Cell, images: np.ndarray, labels: np.ndarray, keys: list[str],
            n_classes: int, *, seed: int, device: torch.device, dsa: DSA,
            settings: MethodSettings, features: np.ndarray | None = None,
            judge_embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
            trajectories: list[np.ndarray] | None = None,
            log: Log | None = None) -> DistilledRepeat:
    """Distil uint8 `images` (N×H×W×C) of the cell's source with the cell's method and ipc.

    `features` (judge embeddings of `images`) are needed by herding and k-center; `judge_embed`
    by dm with `features: judge`; `trajectories` by mtt and datm.
    """
    method, ipc = cell.method, cell.ipc
    # What every learned method's settings share; the rest is each method's params section.
    common = {"dsa": dsa, "architecture": settings.architecture, "width": settings.width}
    run = {"seed": seed, "device": device, "log": log}
    if method == WHOLE:  # the whole-dataset row: every image, as the protocol trains on them
        return DistilledRepeat(to_model_space(images).numpy(), labels.astype(np.int64),
                               origins=list(keys))
    if method in ("random", "herding", "kcenter"):
        if method == "random":
            chosen = select_random(labels, ipc, seed)
        elif features is None:
            raise ValueError(f"{method} selects in the judge's feature space: features needed")
        elif method == "herding":
            chosen = select_herding(features, labels, ipc)
        else:
            chosen = select_kcenter(features, labels, ipc, seed)
        return DistilledRepeat(to_model_space(images[chosen]).numpy(),
                               labels[chosen].astype(np.int64),
                               origins=[keys[i] for i in chosen])
    if method == "dm":
        dm = dict(settings.dm)
        use_judge = dm.pop("features", "random_convnet") == "judge"
        if use_judge and judge_embed is None:
            raise ValueError("dm with features: judge needs the judge's embedding")
        result = distribution_matching(images, labels, n_classes, ipc, DmSettings(**dm, **common),
                                       features=judge_embed if use_judge else None, **run)
    elif method == "dc":
        result = gradient_matching(images, labels, n_classes, ipc,
                                   DcSettings(**settings.dc, **common), **run)
    elif method == "gm_init":
        result = gradient_matching_at_init(images, labels, n_classes, ipc,
                                           GmInitSettings(**settings.gm_init, **common), **run)
    else:
        if not trajectories:
            raise ValueError(f"{method} needs expert trajectories of the {cell.source} source: "
                             "materialize expert_trajectories first")
        mtt = dict(settings.mtt)
        final = mtt.pop("final_max_start_epoch", None)
        label_lr = mtt.pop("label_learning_rate", 2.0)
        if method == "datm":
            recipe = MttSettings(**mtt, **common, soft_labels=True, final_max_start_epoch=final,
                                 label_learning_rate=label_lr)
        else:
            recipe = MttSettings(**mtt, **common)
        result = trajectory_matching(images, labels, n_classes, ipc, trajectories, recipe, **run)
    return DistilledRepeat(result.images, result.labels, result.soft_labels, result.learned_lr,
                           origins=[method] * len(result.images), history=result.history)
