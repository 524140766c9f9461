"""The scaling curve: accuracy against synthetic images per class, a power law fitted to it, and
the real-equivalent (how many synthetic images per class match the real arm).

Following Fan et al., "Scaling Laws of Synthetic Images for Model Training" (CVPR 2024), which
fit test error against synthetic images per class with a power law; here with an offset,
`error = a·N^(-b) + c` (c: the error the recipe would keep with unlimited images), fitted by
least squares on every (N, seed) accuracy. Deviations: three to a handful of points rather than
a sweep over orders of magnitude (each point is `n_seeds` classifier trainings), and the
uncertainty is a bootstrap over the classifier seeds of each point (the generated set itself is
one draw, so its randomness is not covered).

Subsets are nested and seeded: each class's filtered images are permuted once (its own seeded
stream), and a fraction f keeps the first round(f·n) of them (at least one), so the 0.1 subset
lies inside the 0.3 subset, which lies inside the full set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.metrics import mean_std
from synthfactory.ops.seeds import rng

# The fit searches b over this range: a log-spaced grid, then a fine grid around its best point
# (vectorised: the bootstrap refits hundreds of times).
EXPONENT_RANGE = (0.01, 4.0)
GRID_POINTS = 400
BOOTSTRAP_SAMPLES = 200
INTERVAL = (2.5, 97.5)  # percentiles of the bootstrap: a 95% interval


def scaling_to_train(fractions: Sequence[float], arms: Sequence[str]) -> list[float]:
    """The fractions that need classifiers of their own: 1.0 is the filtered set itself, whose
    classifiers (same data, recipe and seeds) the `filtered` arm already trains."""
    return [f for f in fractions if not (f == 1.0 and "filtered" in arms)]


def nested_subsets(labels: np.ndarray, fractions: Sequence[float],
                   seed: int) -> dict[float, np.ndarray]:
    """Sorted indices of each fraction's subset: per class, the first round(f·n) (≥ 1) of one
    seeded permutation, so that smaller fractions are subsets of larger ones."""
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"eval_report.scaling fractions {bad} must be in (0, 1]")
    orders = {int(label): np.flatnonzero(labels == label)[
        rng(seed, "scaling", int(label)).permutation(int(np.sum(labels == label)))]
        for label in np.unique(labels)}
    return {fraction: np.sort(np.concatenate([
        members[:max(1, int(round(fraction * len(members))))] for members in orders.values()]))
        for fraction in fractions}


def _fit_linear(x: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of x (G×M): least-squares a ≥ 0 and 0 ≤ c ≤ 1 of error ≈ a·x + c.

    The unconstrained solution when it is feasible, else the best of the boundary solutions
    (a = 0; c = 0; c = 1). Returns (a, c, squared error), each of length G.
    """
    m = x.shape[1]
    sx, sy = x.sum(1), error.sum()
    sxx, sxy = (x * x).sum(1), x @ error
    det = m * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        a_free = np.where(det > 0, (m * sxy - sx * sy) / det, -1.0)
        c_free = np.where(det > 0, (sy - a_free * sx) / m, -1.0)
    candidates = [(a_free, c_free, (a_free >= 0) & (c_free >= 0) & (c_free <= 1)),
                  (np.zeros_like(sx), np.full_like(sx, np.clip(sy / m, 0, 1)), None)]
    for c in (0.0, 1.0):
        a = np.maximum(0.0, (sxy - c * sx) / np.maximum(sxx, 1e-300))
        candidates.append((a, np.full_like(sx, c), None))
    best_a, best_c = np.zeros_like(sx), np.zeros_like(sx)
    best_sse = np.full_like(sx, np.inf)
    for a, c, feasible in candidates:
        sse = ((a[:, None] * x + c[:, None] - error[None, :]) ** 2).sum(1)
        if feasible is not None:
            sse = np.where(feasible, sse, np.inf)
        better = sse < best_sse
        best_a, best_c, best_sse = (np.where(better, a, best_a), np.where(better, c, best_c),
                                    np.where(better, sse, best_sse))
    return best_a, best_c, best_sse


def fit_power_law(images_per_class: np.ndarray, error: np.ndarray) -> dict[str, float]:
    """a, b, c of `error = a·N^(-b) + c` by least squares (a ≥ 0, c in [0, 1], b in
    EXPONENT_RANGE): for each b the best a and c are linear, so b is searched on a log grid and
    refined on a finer grid around the best point (b to about 1e-5 relative)."""
    n = np.asarray(images_per_class, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    if len(np.unique(n)) < 2:
        raise ValueError("a power law needs accuracies at two or more sizes: give "
                         "eval_report.scaling at least two fractions")

    grid = np.geomspace(*EXPONENT_RANGE, GRID_POINTS)
    for _ in range(2):  # a coarse grid, then a fine one between the best point's neighbours
        a, c, sse = _fit_linear(n[None, :] ** -grid[:, None], error)
        best = int(np.argmin(sse))
        b = float(grid[best])
        grid = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)],
                           GRID_POINTS)
    return {"a": float(a[best]), "b": b, "c": float(c[best])}


def real_equivalent_size(sizes: np.ndarray, means: np.ndarray, fit: dict[str, float],
                         real_accuracy: float) -> tuple[float | None, str]:
    """Synthetic images per class at which the curve reaches the real arm's accuracy.

    `measured` when a measured point reaches it (log-linear interpolation between the two points
    around it; the smallest size when the first point already does), else `extrapolated` from
    the fit, else `unreachable` (the fitted floor c is at or above the real arm's error).
    """
    order = np.argsort(sizes)
    sizes, means = sizes[order], means[order]
    reached = np.flatnonzero(means >= real_accuracy)
    if len(reached):
        first = int(reached[0])
        if first == 0:
            return float(sizes[0]), "measured"
        x0, x1 = math.log(sizes[first - 1]), math.log(sizes[first])
        y0, y1 = means[first - 1], means[first]
        return float(math.exp(x0 + (real_accuracy - y0) / (y1 - y0) * (x1 - x0))), "measured"
    real_error = 1.0 - real_accuracy
    if fit["a"] <= 0 or real_error <= fit["c"]:
        return None, "unreachable"
    return float((fit["a"] / (real_error - fit["c"])) ** (1.0 / fit["b"])), "extrapolated"


def scaling_curve(points: list[dict[str, Any]], real_accuracy: float | None,
                  real_images_per_class: float | None, seed: int) -> dict[str, Any]:
    """The `scaling` entry of metrics.json from points {images_per_class, accuracies}.

    Adds each point's mean and sample std, the fit, the real-equivalent (None without a real
    arm), and their 95% bootstrap intervals (each point's seeds resampled with replacement,
    BOOTSTRAP_SAMPLES times, with a seeded generator so that the same accuracies give the same
    numbers).
    """
    points = sorted(points, key=lambda point: point["images_per_class"])
    sizes = np.asarray([p["images_per_class"] for p in points], dtype=np.float64)
    accuracies = [np.asarray(p["accuracies"], dtype=np.float64) for p in points]
    means = np.asarray([a.mean() for a in accuracies])
    fit = _fit_points(sizes, accuracies)
    generator = rng(seed, "eval_report", "scaling")
    fits, equivalents = [], []
    for _ in range(BOOTSTRAP_SAMPLES):
        resampled = [a[generator.integers(0, len(a), len(a))] for a in accuracies]
        sample_fit = _fit_points(sizes, resampled)
        fits.append([sample_fit[k] for k in ("a", "b", "c")])
        if real_accuracy is not None:
            sample_value, _ = real_equivalent_size(
                sizes, np.asarray([a.mean() for a in resampled]), sample_fit, real_accuracy)
            equivalents.append(math.inf if sample_value is None else sample_value)
    fits_array = np.asarray(fits)
    rows = []
    for point, seeds in zip(points, accuracies, strict=True):
        mean, std = mean_std(seeds.tolist())
        rows.append({"fraction": point.get("fraction"), "n_train": point.get("n_train"),
                     "images_per_class": round(float(point["images_per_class"]), 3),
                     "accuracy_mean": mean, "accuracy_std": std,
                     "accuracies": seeds.tolist()})
    return {
        "points": rows,
        "fit": {key: round(float(fit[key]), 6) for key in ("a", "b", "c")},
        "fit_interval_95": {key: [round(float(v), 6) for v in
                                  np.percentile(fits_array[:, column], INTERVAL)]
                            for column, key in enumerate(("a", "b", "c"))},
        "real_equivalent": (None if real_accuracy is None else _equivalent(
            sizes, means, fit, real_accuracy, np.asarray(equivalents), real_images_per_class)),
        "spread": "classifier seeds only: the generated set is one draw",
    }


def _equivalent(sizes: np.ndarray, means: np.ndarray, fit: dict[str, float], real_accuracy: float,
                bootstrap: np.ndarray, real_images_per_class: float | None) -> dict[str, Any]:
    """The real-equivalent entry: the estimate, how it was found, its bootstrap interval."""
    value, how = real_equivalent_size(sizes, means, fit, real_accuracy)
    # "nearest": no interpolation, so an infinite (never reached) resample stays infinite; an
    # infinite upper bound (None) means more than 2.5% of the resamples never reach the real arm.
    low, high = np.percentile(bootstrap, INTERVAL, method="nearest")
    return {"images_per_class": None if value is None else round(value, 3), "how": how,
            "interval_95": [None if math.isinf(low) else round(float(low), 3),
                            None if math.isinf(high) else round(float(high), 3)],
            "unreachable_fraction": round(float(np.mean(np.isinf(bootstrap))), 4),
            "real_accuracy": real_accuracy,
            "real_images_per_class": (None if real_images_per_class is None
                                      else round(real_images_per_class, 3))}


def _fit_points(sizes: np.ndarray, accuracies: list[np.ndarray]) -> dict[str, float]:
    """The power law fitted to every (size, seed) error."""
    n = np.concatenate([np.full(len(a), size) for size, a in zip(sizes, accuracies, strict=True)])
    return fit_power_law(n, 1.0 - np.concatenate(accuracies))
