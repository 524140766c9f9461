"""What the generator made, for the report: `generation_quality` (fidelity and diversity of the
generated images against the real images the generator learned from) and `memorization` (how
many generated images are near-copies of those training images).

Both compare the generated set (replicate r0's shards, every image, before the filter) with the
generator's own training images: the real train split, or its few-shot subset under
`real_images.few_shot` (the K shots the DDPM or the LoRA learned from) — `real_arm` is that set.

- Quality: `quality.generation_quality` (FD, KID, precision / recall / density / coverage,
  pairwise diversity; overall and per class) in the judge's feature space (the ConvNet judge's
  penultimate layer, or CLIP's image embedding when the judge is CLIP); `encoder` names it,
  since numbers from two spaces do not compare.
- Memorization: `copies.memorization` with the copy detector of `ops/curation/copies.py`
  (shifts, crops, blur, flips, contrast: see its docstring), its threshold calibrated on real
  *validation* images against their nearest training image — distinct images — so that at most
  MEMORIZATION_FPR of them would be called copies. The test split is not read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.curation.copies import calibrate, memorization
from synthfactory.ops.curation.judges import load_judge
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.arms import real_arm, synthetic_arm
from synthfactory.ops.evaluation.contamination import pair_grid
from synthfactory.ops.evaluation.quality import generation_quality

MEMORIZATION_GRID = "memorization"  # the key of the closest pairs' grid, and its PNG's stem
MEMORIZATION_FPR = 0.01  # the share of distinct real (validation, train) pairs called copies
GRID_PAIRS = 8  # closest (generated, training image) pairs pictured


def generated_set_metrics(shards_dir: Path, real_dir: Path, judge_dir: Path,
                          class_names: Sequence[str], device: torch.device, *,
                          judge_batch_size: int, few_shot: int | None, seed: int
                          ) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """metrics.json's `generation_quality` and `memorization` (see the module docstring), and
    the grid of the closest (generated, training image) pairs."""
    generated = synthetic_arm(shards_dir)
    train = real_arm(real_dir)
    val_images, _, _ = read_split(real_dir, "val")
    judge = load_judge(judge_dir, device, judge_batch_size)
    encoder = f"judge ({type(judge).__name__})"
    quality = generation_quality(judge.embed(generated.images), generated.labels,
                                 judge.embed(train.images), train.labels,
                                 class_names=list(class_names), encoder=encoder, seed=seed)
    threshold = calibrate(train.images, val_images, fpr=MEMORIZATION_FPR)
    found = memorization(generated.images, generated.labels, train.images, train.labels,
                         threshold, class_names=list(class_names))
    for pair in found["closest_pairs"]:
        pair["generated_key"] = generated.keys[pair["generated_index"]]
        pair["train_key"] = train.keys[pair["train_index"]]
    found.update(
        fpr=MEMORIZATION_FPR,
        reference=(f"the {few_shot} few-shot images per class the generator learned from"
                   if few_shot else "the real train split the generator learned from"),
        n_reference=len(train.images),
        calibration=(f"threshold at which at most {MEMORIZATION_FPR:.0%} of the "
                     f"{len(val_images)} real validation images (distinct from every training "
                     "image) would be called copies of their nearest training image"))
    grid = pair_grid([(generated.images[pair["generated_index"]],
                       train.images[pair["train_index"]])
                      for pair in found["closest_pairs"][:GRID_PAIRS]])
    return quality, found, grid
