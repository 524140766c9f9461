"""What the generator made, measured in a feature space: fidelity, diversity, and their balance.

Every metric compares the generated images of a class (and all of them, pooled) with the real
*train* images of that class, in one feature space: the judge's features (the embedded default:
the penultimate layer of the ConvNet trained on real images, `judge.embed`, also stored as the
`embeddings` column of `shard_scores`) or a pretrained encoder's (CLIP, DINOv2: a callable the
caller builds from a local directory). The encoder's name is part of the result: numbers from two
spaces are not comparable.

- Fréchet distance (FD; Heusel et al. 2017, "GANs trained by a two time-scale update rule
  converge to a local Nash equilibrium", the FID formula) between Gaussians fitted to the two
  sets: ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½). Computed by torchmetrics'
  `FrechetInceptionDistance` with an identity feature extractor (the features are given, so no
  Inception network is loaded), in float64.
- KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased MMD² with the cubic
  polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets; torchmetrics'
  `KernelInceptionDistance`, again with an identity extractor, its subsets drawn from a seeded
  generator. Unlike FD it is unbiased at small n, so it is the one to compare across classes of
  different sizes.
- Precision, recall, density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity
  metrics for generative models", ICML; `prdc.compute_prdc`, Euclidean k-nearest-neighbour balls,
  k = 5 as in the paper unless given). Precision/density: how much of the generated set lies on
  the real manifold; recall/coverage: how much of the real manifold the generated set reaches.
- Diversity: the mean pairwise *cosine distance* (1 − cosine similarity) between the feature
  vectors of distinct images of a set, for the generated images and, as its yardstick, the real
  ones (`real_diversity`). A generator that collapses a class scores far below its real images.

A metric that cannot be computed for a group (too few images, a singular result) is `None`, and
`null_reasons[metric]` says why; a number is never made up for it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

DEFAULT_K = 5                 # Naeem et al.'s k for the k-NN balls of precision/recall/density/coverage
KID_SUBSETS = 100             # torchmetrics' default number of KID subsets
KID_SUBSET_SIZE = 1000        # torchmetrics' default subset size (capped at the smaller set's size)
PRDC_MAX_SAMPLES = 5000       # prdc builds N×N distance matrices: larger sets are subsampled (seeded)
METRICS = ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage", "diversity",
           "real_diversity")


class _GivenFeatures(torch.nn.Module):
    """An identity "feature extractor" for torchmetrics: the inputs already are the features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of feature vectors (N, D), got shape "
                         f"{array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite values (nan or inf)")
    return array


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N×D each, N ≥ 2), computed
    by torchmetrics' FID with the features given; raises ValueError when a set has < 2 rows."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    if len(real) < 2 or len(generated) < 2:
        raise ValueError(f"FD needs at least 2 images per set (a covariance), got {len(real)} "
                         f"real and {len(generated)} generated")
    metric = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(generated), real=False)
    return float(metric.compute())


def kernel_inception_distance(real: np.ndarray, generated: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over `subsets` random subsets of `subset_size` rows, capped at the smaller
    set) between two feature sets, by torchmetrics with the features given; seeded."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    size = min(subset_size, len(real), len(generated))
    if size < 2:
        raise ValueError(f"KID needs subsets of at least 2 images, got {len(real)} real and "
                         f"{len(generated)} generated")
    with warnings.catch_warnings():  # "saves all features in a buffer": they are given, and small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_GivenFeatures(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(generated), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def prdc_metrics(real: np.ndarray, generated: np.ndarray, k: int = DEFAULT_K, *,
                 max_samples: int = PRDC_MAX_SAMPLES, seed: int = 0) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) by `prdc.compute_prdc` with
    k nearest neighbours; each set needs ≥ k + 2 rows (prdc's neighbour search counts the point
    itself and partitions at k + 1). Sets over `max_samples` rows are subsampled (seeded)."""
    import prdc

    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    if min(len(real), len(generated)) < k + 2:
        raise ValueError(f"precision/recall/density/coverage with k = {k} need at least {k + 2} "
                         f"images per set, got {len(real)} real and {len(generated)} generated")
    sample = np.random.default_rng(seed)
    if len(real) > max_samples:
        real = real[np.sort(sample.choice(len(real), max_samples, replace=False))]
    if len(generated) > max_samples:
        generated = generated[np.sort(sample.choice(len(generated), max_samples, replace=False))]
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        values = prdc.compute_prdc(real_features=real, fake_features=generated, nearest_k=k)
    return {name: float(value) for name, value in values.items()}


def pairwise_diversity(features: np.ndarray) -> float:
    """Mean cosine distance (1 − cosine similarity) over all pairs of distinct rows; rows of zero
    norm (no direction) are left out. Raises ValueError when fewer than 2 rows remain."""
    features = _as_features(features, "features")
    norms = np.linalg.norm(features, axis=1)
    unit = features[norms > 1e-12] / norms[norms > 1e-12, None]
    n = len(unit)
    if n < 2:
        raise ValueError(f"diversity needs at least 2 images with nonzero features, got {n}")
    total = unit.sum(axis=0)
    mean_cosine = (float(total @ total) - n) / (n * (n - 1))  # Σ_{i≠j} cos = ‖Σu‖² − n
    return 1.0 - mean_cosine


def group_quality(real: np.ndarray, generated: np.ndarray, *, k: int = DEFAULT_K,
                  kid_subsets: int = KID_SUBSETS, kid_subset_size: int = KID_SUBSET_SIZE,
                  prdc_max_samples: int = PRDC_MAX_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Every metric of one group (a class, or all images): numbers, or None with the reason in
    `null_reasons`; `notes` flags numbers to read with care (FD at n ≤ feature dimension)."""
    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    result: dict[str, Any] = {"n_real": len(real), "n_generated": len(generated)}
    reasons: dict[str, str] = {}
    notes: dict[str, str] = {}

    def attempt(names: Sequence[str], compute: Any) -> None:
        try:
            values = compute()
        except ValueError as error:
            for name in names:
                result[name] = None
                reasons[name] = str(error)
            return
        for name, value in zip(names, values, strict=True):
            if value is not None and not np.isfinite(value):
                result[name], reasons[name] = None, f"not finite ({value}): a degenerate covariance"
            else:
                result[name] = value

    attempt(["fd"], lambda: [frechet_distance(real, generated)])
    if result["fd"] is not None and min(len(real), len(generated)) <= real.shape[1]:
        notes["fd"] = (f"a covariance of {min(len(real), len(generated))} images in {real.shape[1]} "
                       "dimensions is rank-deficient: FD is biased upward at small n; compare it "
                       "only at equal n (KID is unbiased)")
    attempt(["kid", "kid_std"], lambda: kernel_inception_distance(
        real, generated, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed))
    if result["kid"] is not None:
        result["kid_subset_size"] = min(kid_subset_size, len(real), len(generated))
    prdc_names = ("precision", "recall", "density", "coverage")
    attempt(prdc_names, lambda: [prdc_metrics(real, generated, k, max_samples=prdc_max_samples,
                                              seed=seed)[name] for name in prdc_names])
    attempt(["diversity"], lambda: [pairwise_diversity(generated)])
    attempt(["real_diversity"], lambda: [pairwise_diversity(real)])
    result["null_reasons"] = reasons
    if notes:
        result["notes"] = notes
    return result


def generation_quality(generated_features: np.ndarray, generated_labels: np.ndarray,
                       real_features: np.ndarray, real_labels: np.ndarray, *,
                       class_names: Sequence[str] | None = None, encoder: str = "judge",
                       k: int = DEFAULT_K, kid_subsets: int = KID_SUBSETS,
                       kid_subset_size: int = KID_SUBSET_SIZE,
                       prdc_max_samples: int = PRDC_MAX_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """FD, KID, precision/recall/density/coverage and diversity of the generated features against
    the real train features, over all images and per class (labels are class indices into
    `class_names`; without names, the sorted labels as strings). Plain, JSON-ready dicts:
    `{overall, per_class: {name: ...}, encoder, n_real, n_generated, k, diversity_metric}`."""
    generated = _as_features(generated_features, "generated_features")
    real = _as_features(real_features, "real_features")
    generated_labels, real_labels = np.asarray(generated_labels), np.asarray(real_labels)
    if generated.shape[1] != real.shape[1]:
        raise ValueError(f"generated features have {generated.shape[1]} dimensions and real ones "
                         f"{real.shape[1]}: both must come from the same encoder ({encoder})")
    if len(generated_labels) != len(generated) or len(real_labels) != len(real):
        raise ValueError(f"labels do not match features: {len(generated_labels)} labels for "
                         f"{len(generated)} generated rows, {len(real_labels)} for {len(real)} real")
    if class_names is None:
        labels = sorted(set(generated_labels.tolist()) | set(real_labels.tolist()))
        names = {int(label): str(label) for label in labels}
    else:
        names = dict(enumerate(class_names))
    settings = {"k": k, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
                "prdc_max_samples": prdc_max_samples, "seed": seed}
    per_class = {name: group_quality(real[real_labels == label],
                                     generated[generated_labels == label], **settings)
                 for label, name in names.items()}
    return {"overall": group_quality(real, generated, **settings), "per_class": per_class,
            "encoder": encoder, "n_real": len(real), "n_generated": len(generated), "k": k,
            "diversity_metric": "mean pairwise cosine distance (1 - cosine similarity)"}
