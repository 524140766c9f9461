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
  MEMORIZATION_FPR of them would be called copies.
- Near-copies of *test* images under the same edits (`test_copies`), beside the report's
  leakage rule (`contamination.py`: judge cosine and pixel correlation, which misses a shift,
  a blur or σ = 16 noise): the detector's threshold calibrated on real validation images
  against their nearest test image (distinct images), so at MEMORIZATION_FPR about that share
  of generated images would be flagged by chance — the entry states that expectation beside the
  count. The test images come from eval_report, their one reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.curation.copies import calibrate, memorization, near_copies
from synthfactory.ops.curation.judges import load_judge
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.evaluation.arms import real_arm, synthetic_arm
from synthfactory.ops.evaluation.contamination import pair_grid
from synthfactory.ops.evaluation.quality import generation_quality

MEMORIZATION_GRID = "memorization"  # the key of the closest pairs' grid, and its PNG's stem
MEMORIZATION_FPR = 0.01  # the share of distinct real (validation, train) pairs called copies
GRID_PAIRS = 8  # closest (generated, training image) pairs pictured


def generated_set_metrics(shards_dir: Path, real_dir: Path, judge_dir: Path,
                          class_names: Sequence[str], device: torch.device,
                          test_images: np.ndarray, *, judge_batch_size: int,
                          few_shot: int | None, seed: int
                          ) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, dict[str, Any]]:
    """metrics.json's `generation_quality` and `memorization` (see the module docstring), the
    grid of the closest (generated, training image) pairs, and the edit-robust count of
    near-copies of test images (`contamination.edit_robust`)."""
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
    return quality, found, grid, test_copies(generated.images, generated.labels, generated.keys,
                                             test_images, val_images, class_names)


def test_copies(generated: np.ndarray, labels: np.ndarray, keys: Sequence[str],
                test_images: np.ndarray, val_images: np.ndarray,
                class_names: Sequence[str]) -> dict[str, Any]:
    """How many generated images are near-copies of a test image under small edits (the copy
    detector), with the count expected by chance at the calibrated false-positive rate."""
    threshold = calibrate(test_images, val_images, fpr=MEMORIZATION_FPR)
    found = near_copies(generated, test_images, threshold)
    copies = found["is_copy"]
    return {"detector": "ops/curation/copies.py (shifts, crops, blur, noise, contrast, flips)",
            "threshold": threshold, "fpr": MEMORIZATION_FPR, "n": len(generated),
            "count": int(copies.sum()),
            "expected_by_chance": round(MEMORIZATION_FPR * len(generated), 1),
            "per_class": {name: int(copies[labels == label].sum())
                          for label, name in enumerate(class_names)},
            "keys": [keys[i] for i in np.flatnonzero(copies)[:100]]}
