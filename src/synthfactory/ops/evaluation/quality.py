"""What the generator made, measured in a feature space: fidelity, diversity, and their balance.

Every metric compares the generated images of a class (and all of them, pooled) with the real
*train* images of that class, in one feature space: the judge's features (the embedded default:
the penultimate layer of the ConvNet trained on real images, `judge.embed`, also stored as the
`embeddings` column of `shard_scores`) or a pretrained encoder's (CLIP, DINOv2: a callable the
caller builds from a local directory). The encoder's name is part of the result: numbers from two
spaces are not comparable.

- Fréchet distance (FD; Heusel et al. 2017, "GANs trained by a two time-scale update rule
  converge to a local Nash equilibrium", the FID formula) between Gaussians fitted to the two
  sets: ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½), with torchmetrics'
  `FrechetInceptionDistance`'s means and unbiased covariances, in float64 (a test holds the two
  equal to 1e-7 relative, rank-deficient covariances included; on the digits' classes, 100
  images in 512 dimensions, the square roots of the ~0 eigenvalues make torchmetrics', scipy's
  `sqrtm` and this differ by up to 5e-7 relative, far below the report's two decimals; the
  FD of all images agrees to 1e-9). Deviation, for speed only:
  torchmetrics takes Tr (Σ_r Σ_g)^½ from the general eigenvalues of the non-symmetric Σ_r Σ_g
  (the digits' judge has 512 dimensions: 1.7 s on this 2-core machine, and a report computes
  it for every class and all images); here from those of the similar, symmetric
  Σ_r^½ Σ_g Σ_r^½ (the same eigenvalues; two symmetric eigendecompositions: 0.24 s), whose
  round-off negatives are set to 0 where torchmetrics' complex square roots make them imaginary
  and drops them with `.real`.
- KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased MMD² with the cubic
  polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets, as torchmetrics'
  `KernelInceptionDistance` computes it (the same formula, the same seeded `torch.randperm`
  subsets, float64; a test holds the two equal to 1e-9). Deviation, for speed only: torchmetrics
  builds three subset×subset kernels per subset (100 subsets of up to 1,000 rows: ~150 GFLOP,
  ~10 s of a report on 2 cores, though the subsets of a 1,000-image set are nearly the same rows);
  here, when the three full kernels fit in `KID_KERNEL_ELEMENTS`, they are built once and each
  subset's sums are read from them. Unlike FD it is unbiased at small n, so it is the one to
  compare across classes of different sizes.
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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

DEFAULT_K = 5                 # Naeem et al.'s k for the k-NN balls of precision/recall/density/coverage
KID_SUBSETS = 100             # torchmetrics' default number of KID subsets
KID_SUBSET_SIZE = 1000        # torchmetrics' default subset size (capped at the smaller set's size)
KID_KERNEL_ELEMENTS = 30_000_000   # full kernels up to this many float64 entries (240 MB) are
                                   #   built once; larger sets compute each subset's kernels
PRDC_MAX_SAMPLES = 5000       # prdc builds N×N distance matrices: larger sets are subsampled (seeded)
METRICS = ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage", "diversity",
           "real_diversity")


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of feature vectors (N, D), got shape "
                         f"{array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite values (nan or inf)")
    return array


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N×D each, N ≥ 2), equal
    to torchmetrics' FID with the features given (see the module docstring); raises ValueError
    when a set has < 2 rows."""
    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    if len(real) < 2 or len(generated) < 2:
        raise ValueError(f"FD needs at least 2 images per set (a covariance), got {len(real)} "
                         f"real and {len(generated)} generated")
    real_t, generated_t = torch.from_numpy(real), torch.from_numpy(generated)
    dims = real_t.shape[1]  # torch.cov of one dimension is 0-d: keep it D×D
    sigma_real = torch.cov(real_t.T).reshape(dims, dims)
    sigma_generated = torch.cov(generated_t.T).reshape(dims, dims)
    # Tr (Σ_r Σ_g)^½ = Σ √λ over the eigenvalues of Σ_r^½ Σ_g Σ_r^½ (similar to Σ_r Σ_g).
    values, vectors = torch.linalg.eigh(sigma_real)
    root_real = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    product = root_real @ sigma_generated @ root_real
    trace_root = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    means = (real_t.mean(0) - generated_t.mean(0)).square().sum()
    return float(means + sigma_real.trace() + sigma_generated.trace() - 2 * trace_root)


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KID's kernel (aᵀb / d + 1)³ between the rows of a and b."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _subset_mmd(sum_rr: torch.Tensor, sum_gg: torch.Tensor, sum_rg: torch.Tensor,
                size: int) -> torch.Tensor:
    """The unbiased MMD² of one subset pair from its kernel sums (the diagonals taken out of
    the two within-set sums), as torchmetrics' `maximum_mean_discrepancy`."""
    return (sum_rr + sum_gg) / (size * (size - 1)) - 2.0 * sum_rg / size**2


def kernel_inception_distance(real: np.ndarray, generated: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """KID (mean, population std over `subsets` random subsets of `subset_size` rows, capped at
    the smaller set) between two feature sets; seeded, equal to torchmetrics' value."""
    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    size = min(subset_size, len(real), len(generated))
    if size < 2:
        raise ValueError(f"KID needs subsets of at least 2 images, got {len(real)} real and "
                         f"{len(generated)} generated")
    real_t, generated_t = torch.from_numpy(real), torch.from_numpy(generated)
    # torchmetrics draws a real then a generated permutation per subset from the global
    # generator after `manual_seed(seed)`; a fresh CPU generator with that seed gives the same.
    draws = torch.Generator().manual_seed(seed)
    picks = []
    for _ in range(subsets):
        real_rows = torch.randperm(len(real), generator=draws)[:size]
        picks.append((real_rows, torch.randperm(len(generated), generator=draws)[:size]))
    n_real, n_generated = len(real), len(generated)
    whole = n_real**2 + n_generated**2 + n_real * n_generated <= KID_KERNEL_ELEMENTS
    if whole:
        k_rr, k_gg = _poly_kernel(real_t, real_t), _poly_kernel(generated_t, generated_t)
        k_rg = _poly_kernel(real_t, generated_t)
        # A subset's kernel sum is sᵀKs with s its rows' 0/1 indicator (a permutation's prefix
        # has no repeats): every subset at once is one product with the (subsets × n) indicators.
        in_real = torch.zeros(subsets, n_real, dtype=torch.float64)
        in_generated = torch.zeros(subsets, n_generated, dtype=torch.float64)
        for index, (real_rows, generated_rows) in enumerate(picks):
            in_real[index, real_rows] = 1.0
            in_generated[index, generated_rows] = 1.0
        sum_rr = ((in_real @ k_rr) * in_real).sum(1) - in_real @ k_rr.diagonal()
        sum_gg = ((in_generated @ k_gg) * in_generated).sum(1) - in_generated @ k_gg.diagonal()
        sum_rg = ((in_real @ k_rg) * in_generated).sum(1)
        values = _subset_mmd(sum_rr, sum_gg, sum_rg, size)
    else:
        scores = []
        for real_rows, generated_rows in picks:
            f_real, f_generated = real_t[real_rows], generated_t[generated_rows]
            sub_rr, sub_gg = _poly_kernel(f_real, f_real), _poly_kernel(f_generated, f_generated)
            sub_rg = _poly_kernel(f_real, f_generated)
            scores.append(_subset_mmd(sub_rr.sum() - sub_rr.diagonal().sum(),
                                      sub_gg.sum() - sub_gg.diagonal().sum(), sub_rg.sum(), size))
        values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


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
    def prdc_values() -> list[float]:
        measured = prdc_metrics(real, generated, k, max_samples=prdc_max_samples, seed=seed)
        return [measured[name] for name in prdc_names]  # one k-NN computation for all four

    attempt(prdc_names, prdc_values)
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
