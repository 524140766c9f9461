"""Generation quality metrics: FD against a direct scipy formula and torchmetrics', KID against
torchmetrics' and on known cases, prdc on known cases, and nulls with reasons where a class has
too few images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import linalg

from synthfactory.ops.evaluation.quality import (frechet_distance, generation_quality,
                                                 kernel_inception_distance, pairwise_diversity,
                                                 prdc_metrics)


def _scipy_fd(real: np.ndarray, generated: np.ndarray) -> float:
    """Heusel et al.'s formula as the reference implementations write it (scipy.linalg.sqrtm)."""
    mu_r, mu_g = real.mean(axis=0), generated.mean(axis=0)
    sigma_r = np.atleast_2d(np.cov(real, rowvar=False))  # one dimension: 0-d otherwise
    sigma_g = np.atleast_2d(np.cov(generated, rowvar=False))
    covmean = linalg.sqrtm(sigma_r @ sigma_g).real
    return float(np.sum((mu_r - mu_g) ** 2) + np.trace(sigma_r + sigma_g - 2.0 * covmean))


class GivenFeatures(torch.nn.Module):
    """An identity "feature extractor" for torchmetrics: the inputs already are the features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@pytest.fixture(scope="module")
def features() -> tuple[np.ndarray, np.ndarray]:
    """Judge-like features: nonnegative (ReLU), correlated, 300 real and 200 generated in 32-D."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(32, 32)) / 4
    real = np.maximum(rng.normal(size=(300, 32)) @ mixing + 0.5, 0)
    generated = np.maximum(rng.normal(0.2, 1.1, size=(200, 32)) @ mixing + 0.5, 0)
    return real, generated


def test_fd_equals_the_scipy_sqrtm_formula(features: tuple) -> None:
    real, generated = features
    ours, direct = frechet_distance(real, generated), _scipy_fd(real, generated)
    assert ours > 0.01
    assert abs(ours - direct) <= 1e-6, (ours, direct)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n_real, n_generated, dims", [
    (300, 200, 32),   # full-rank covariances
    (40, 25, 64),     # fewer images than dimensions: both covariances rank-deficient (a class)
    (50, 60, 1),      # one dimension
])
def test_fd_equals_torchmetrics_frechet_inception_distance(n_real: int, n_generated: int,
                                                           dims: int) -> None:
    """The symmetric form (Σ_r^½ Σ_g Σ_r^½) gives torchmetrics' FID of the same features,
    including at n ≤ D where FD of a class is computed from singular covariances."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(dims)
    mixing = rng.normal(size=(dims, dims)) / 4 + np.eye(dims)
    real = np.maximum(rng.normal(size=(n_real, dims)) @ mixing + 0.5, 0)
    generated = np.maximum(rng.normal(1.0, 1.5, size=(n_generated, dims)) @ mixing + 0.5, 0)
    metric = FrechetInceptionDistance(feature=GivenFeatures(dims))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(generated), real=False)
    reference = float(metric.compute())
    assert reference > 0.01
    # 1e-7: torchmetrics forms the covariances from summed outer products less n·μμᵀ, which
    # loses digits; at n ≤ D the two differ by ~1e-8 relative (scipy's sqrtm sides with ours).
    ours = frechet_distance(real, generated)
    assert ours == pytest.approx(reference, rel=1e-7)
    assert ours == pytest.approx(_scipy_fd(real, generated), rel=1e-7)


def test_kid_of_identical_sets_is_about_zero_and_of_shifted_sets_is_not(features: tuple) -> None:
    real, _ = features
    same, _ = kernel_inception_distance(real, real.copy(), subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(real, real + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.02 * shifted
    again = kernel_inception_distance(real, real + 1.0, subsets=20, subset_size=100)
    assert again[0] == shifted  # seeded subsets


@pytest.mark.parametrize("kernels_once", [True, False])
def test_kid_equals_torchmetrics_kernel_inception_distance(features: tuple, kernels_once: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of summing the kernels (built once, or per subset for sets too large for that)
    give torchmetrics' KID from the same seeded subsets: it stays the reference."""
    from torchmetrics.image.kid import KernelInceptionDistance

    from synthfactory.ops.evaluation import quality

    if not kernels_once:
        monkeypatch.setattr(quality, "KID_KERNEL_ELEMENTS", 0)
    real, generated = features
    for subsets, size in ((30, 150), (7, 200)):  # 200: every generated row in every subset
        metric = KernelInceptionDistance(feature=GivenFeatures(real.shape[1]),
                                         subsets=subsets, subset_size=size)
        metric.update(torch.from_numpy(real), real=True)
        metric.update(torch.from_numpy(generated), real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            mean, std = (float(value) for value in metric.compute())
        ours = kernel_inception_distance(real, generated, subsets=subsets, subset_size=size,
                                         seed=3)
        assert ours == pytest.approx((mean, std), rel=1e-9, abs=1e-12)
        assert abs(mean) > 1e-4  # a real difference, not two zeros


def test_prdc_recovers_identical_and_disjoint_sets(features: tuple) -> None:
    real, _ = features
    same = prdc_metrics(real, real.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = prdc_metrics(real, real + 1000.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_diversity_is_the_mean_pairwise_cosine_distance() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 8))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = unit @ unit.T
    expected = 1.0 - (cosine.sum() - 30) / (30 * 29)
    assert pairwise_diversity(x) == pytest.approx(expected, abs=1e-12)
    assert pairwise_diversity(np.tile(x[:1], (5, 1))) == pytest.approx(0.0, abs=1e-12)


def test_generation_quality_per_class_with_nulls_and_reasons(features: tuple) -> None:
    real, generated = features
    real_labels = np.arange(len(real)) % 3
    generated_labels = np.zeros(len(generated), dtype=np.int64)
    generated_labels[:4] = 1  # class "b": 4 generated images; class "c": none
    result = generation_quality(generated, generated_labels, real, real_labels,
                                class_names=["a", "b", "c"], encoder="judge", k=5,
                                kid_subsets=10, kid_subset_size=50)
    json.dumps(result)  # plain, JSON-ready
    assert result["encoder"] == "judge" and result["k"] == 5
    assert result["n_real"] == 300 and result["n_generated"] == 200
    assert set(result["per_class"]) == {"a", "b", "c"}
    a, b, c = (result["per_class"][name] for name in "abc")
    assert a["fd"] is not None and a["kid"] is not None and a["precision"] is not None
    assert a["kid_subset_size"] == 50 and a["null_reasons"] == {}
    assert b["fd"] is not None and b["kid"] is not None and b["kid_subset_size"] == 4
    assert "fd" in b["notes"]  # 4 images in 32 dimensions: rank-deficient covariance
    assert b["precision"] is None and "at least 7" in b["null_reasons"]["precision"]
    assert c["n_generated"] == 0
    for name in ("fd", "kid", "precision", "recall", "density", "coverage", "diversity"):
        assert c[name] is None and c["null_reasons"][name]
    assert c["real_diversity"] is not None
    overall = result["overall"]
    assert overall["fd"] == pytest.approx(_scipy_fd(real, generated), abs=1e-6)
