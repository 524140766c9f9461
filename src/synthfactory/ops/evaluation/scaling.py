"""The scaling curves: accuracy against images per class for nested subsets of the filtered
synthetic set and of the real train split, a power law fitted to each where the points allow it,
and the exchange rate between them (how many real images per class the synthetic set is worth).

Following Fan et al., "Scaling Laws of Synthetic Images for Model Training" (CVPR 2024), which
fit test error against synthetic images per class with a power law; here with an offset,
`error = a·N^(-b) + c` (c: the error the recipe would keep with unlimited images), fitted by
least squares to the size means. A fit is reported only with at least 2 residual degrees of
freedom (≥ 5 sizes for 3 parameters), with its goodness of fit: a 3-parameter law through 3
points passes through them exactly and predicts nothing. The real curve is what the
scaling-law papers set beside the synthetic one; the exchange rate inverts it at the synthetic
accuracy (interpolated in log N between measured real sizes; extrapolated only with a fit that
has the degrees of freedom). Intervals come from one bootstrap (`comparisons`) that resamples
the test images both curves share, the classifier seeds and the replicates.

Subsets are nested and seeded: each class's images are permuted once (its own seeded stream;
the real curve has a stream of its own), and a fraction f keeps the first round(f·n) of them
(at least one), so the 0.1 subset lies inside the 0.3 subset, which lies inside the full set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.comparisons import (bootstrap_accuracies, coverage,
                                                    percentile_interval)
from synthfactory.ops.seeds import rng

# The fit searches b over this range: a log-spaced grid, then a fine grid around its best point
# (vectorised: the bootstrap refits hundreds of times).
EXPONENT_RANGE = (0.01, 4.0)
GRID_POINTS = 400


def nested_subsets(labels: np.ndarray, fractions: Sequence[float],
                   seed: int, stream: str = "scaling") -> dict[float, np.ndarray]:
    """Sorted indices of each fraction's subset: per class, the first round(f·n) (≥ 1) of one
    seeded permutation, so that smaller fractions are subsets of larger ones.

    The same function makes the real curve's subsets of the real train split: pass
    `stream=REAL_STREAM` so that its permutations are not the synthetic curve's."""
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"eval_report.scaling fractions {bad} must be in (0, 1]")
    orders = {int(label): np.flatnonzero(labels == label)[
        rng(seed, stream, int(label)).permutation(int(np.sum(labels == label)))]
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


REAL_STREAM = "scaling-real"  # nested_subsets' stream for the real curve's subsets
N_PARAMETERS = 3  # a, b, c of error = a·N^(-b) + c
MIN_RESIDUAL_DOF = 2
MIN_SIZES = N_PARAMETERS + MIN_RESIDUAL_DOF
EVIDENCE_DRAWS = 1000
INTERPOLATED, EXTRAPOLATED, UNREACHABLE = "interpolated", "extrapolated", "unreachable"
BEYOND, BELOW = "beyond the measured range", "below the measured range"


def goodness_of_fit(sizes: np.ndarray, accuracy_means: np.ndarray,
                    fit: dict[str, float]) -> dict[str, float | int]:
    """Residual dof (sizes − 3), residual standard error and R² of the fit over the size means
    (in accuracy points: error = 1 − accuracy, so the residuals are the same)."""
    sizes, means = np.asarray(sizes, np.float64), np.asarray(accuracy_means, np.float64)
    predicted = 1.0 - (fit["a"] * sizes ** -fit["b"] + fit["c"])
    sse = float(np.sum((means - predicted) ** 2))
    sst = float(np.sum((means - means.mean()) ** 2))
    dof = len(sizes) - N_PARAMETERS
    return {"residual_dof": dof, "rse": math.sqrt(sse / dof) if dof > 0 else None,
            "r2": 1.0 - sse / sst if sst > 0 else None}


def fit_with_evidence(sizes: Sequence[float], accuracy_means: Sequence[float]
                      ) -> dict[str, Any]:
    """`{fit, gof, no_fit}`: the power law through the size means and its goodness of fit, or
    `fit: None` and why, when fewer than MIN_SIZES distinct sizes leave under MIN_RESIDUAL_DOF
    residual degrees of freedom (a 3-parameter law through 3 points passes through them
    exactly and says nothing about the sizes between or beyond them)."""
    sizes_array = np.asarray(sizes, np.float64)
    means = np.asarray(accuracy_means, np.float64)
    distinct = len(np.unique(sizes_array))
    if distinct < MIN_SIZES:
        return {"fit": None, "gof": None,
                "no_fit": f"{distinct} sizes leave {distinct - N_PARAMETERS} residual degrees "
                          f"of freedom for the {N_PARAMETERS}-parameter power law; a fit needs "
                          f"at least {MIN_RESIDUAL_DOF} (≥ {MIN_SIZES} sizes): the measured "
                          "points are reported without one"}
    fit = fit_power_law(sizes_array, 1.0 - means)
    return {"fit": fit, "gof": goodness_of_fit(sizes_array, means, fit), "no_fit": None}


def monotone_curve(means: np.ndarray) -> np.ndarray:
    """The closest non-decreasing sequence (least squares; pool adjacent violators): accuracy
    cannot fall with more images, so a dip between two sizes is noise and is pooled."""
    blocks: list[list[float]] = []  # [mean, weight]
    for value in np.asarray(means, np.float64):
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1), (m2, w2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return np.repeat([b[0] for b in blocks], [int(b[1]) for b in blocks])


def invert_curve(sizes: np.ndarray, accuracy_means: np.ndarray, accuracy: float,
                 fit: dict[str, float] | None = None) -> tuple[float | None, str]:
    """Images per class at which a measured curve reaches `accuracy`.

    Between measured sizes: linear interpolation in log N of the monotone (pooled) curve, at
    the smallest size that reaches it (`interpolated`). Outside them: the fit's inverse
    (`extrapolated`, or `unreachable` when the fitted floor c is at or above the error) when a
    fit with residual degrees of freedom is given, else None and `beyond the measured range` /
    `below the measured range`.
    """
    order = np.argsort(sizes)
    sizes = np.asarray(sizes, np.float64)[order]
    curve = monotone_curve(np.asarray(accuracy_means, np.float64)[order])
    if curve[0] <= accuracy <= curve[-1]:
        first = int(np.flatnonzero(curve >= accuracy)[0])
        if first == 0 or curve[first] == accuracy:
            return float(sizes[first]), INTERPOLATED
        x0, x1 = math.log(sizes[first - 1]), math.log(sizes[first])
        y0, y1 = curve[first - 1], curve[first]
        return float(math.exp(x0 + (accuracy - y0) / (y1 - y0) * (x1 - x0))), INTERPOLATED
    if fit is None:
        return None, BEYOND if accuracy > curve[-1] else BELOW
    error = 1.0 - accuracy
    if fit["a"] <= 0 or error <= fit["c"]:
        return None, UNREACHABLE
    return float((fit["a"] / (error - fit["c"])) ** (1.0 / fit["b"])), EXTRAPOLATED


def _curve_entry(sizes: np.ndarray, arms: Sequence[Any], boot: np.ndarray,
                 level: float) -> dict[str, Any]:

    means = np.asarray([arm.accuracy for arm in arms])
    points = []
    for column, (size, arm) in enumerate(zip(sizes, arms, strict=True)):
        low, high = percentile_interval(boot[:, column], level)
        per_seed = arm.correct.mean(axis=(0, 2))
        points.append({"images_per_class": round(float(size), 3), "arm": arm.name,
                       "accuracy": round(arm.accuracy, 6), "ci95": [round(low, 6), round(high, 6)],
                       "accuracy_std_seeds": round(float(per_seed.std(ddof=1)), 6)
                       if len(per_seed) > 1 else 0.0})
    evidence = fit_with_evidence(sizes, means)
    if evidence["fit"] is not None:
        evidence["fit"] = {k: round(float(v), 6) for k, v in evidence["fit"].items()}
        evidence["gof"] = {k: None if v is None else (v if isinstance(v, int) else round(v, 6))
                           for k, v in evidence["gof"].items()}
    covers, _ = coverage(arms)
    return {"points": points, **evidence, "covers": covers}


def _priced(curve_sizes: np.ndarray, curve_means: np.ndarray, curve_boot: np.ndarray,
            fit: dict[str, float] | None, target: float, target_boot: np.ndarray,
            level: float) -> dict[str, Any]:
    """The inverse of a curve at a target accuracy, with its bootstrap interval: each draw
    inverts its own resampled curve (refitted when the draw needs the fit) at its own
    resampled target, on the same resampled test images and seeds."""
    value, how = invert_curve(curve_sizes, curve_means, target, fit)
    draws = np.empty(len(target_boot))
    for row, (means, goal) in enumerate(zip(curve_boot, target_boot, strict=True)):
        found, found_how = invert_curve(curve_sizes, means, goal)
        if found is None and fit is not None:
            found, found_how = invert_curve(curve_sizes, means, goal,
                                            fit_power_law(curve_sizes, 1.0 - means))
        draws[row] = (found if found is not None
                      else -math.inf if found_how == BELOW else math.inf)
    tail = 50 * (1 - level)
    low, high = np.percentile(draws, [tail, 100 - tail], method="inverted_cdf")
    return {"images_per_class": None if value is None else round(value, 3), "how": how,
            "ci95": [None if math.isinf(low) else round(float(low), 3),
                     None if math.isinf(high) else round(float(high), 3)],
            "beyond_fraction": round(float(np.mean(draws == math.inf)), 4),
            "below_fraction": round(float(np.mean(draws == -math.inf)), 4)}


def scaling_evidence(synthetic: Sequence[tuple[float, Any]],
                     real: Sequence[tuple[float, Any]] | None = None, *,
                     priced_size: float | None = None, draws: int = EVIDENCE_DRAWS,
                     seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """metrics.json's `scaling`: both curves, their fits (only with ≥ 2 residual dof), and the
    exchange rate between them.

    `synthetic` and `real`: (images per class, `comparisons.ArmCorrectness`) per measured size —
    nested subsets of the filtered set and of the real train split (`nested_subsets`), every
    point scored on the same test images with the same classifier seeds. One bootstrap
    (`comparisons.bootstrap_accuracies`) resamples test images, seeds and replicates for every
    point of both curves at once, so each draw is a consistent pair of curves.

    Returns `{points, fit, gof, no_fit, covers, real_equivalent, real_curve, exchange_rate}`:
    `exchange_rate` is how many real images per class the synthetic set of `priced_size`
    (default: the largest synthetic size) is worth — the real curve inverted at that synthetic
    accuracy (`invert_curve`) with its interval; `real_equivalent` the converse: synthetic
    images per class that reach the largest real size's accuracy. Both are None without a real
    curve. An interval bound of None means more than the tail of the draws fall outside the
    measured range with no fit to extrapolate (`beyond_fraction`, `below_fraction`).
    """

    if len(synthetic) < 2:
        raise ValueError(f"a scaling curve needs two or more sizes, got {len(synthetic)}: give "
                         "eval_report.scaling at least two fractions (≥ 5 for a fit)")
    synthetic = sorted(synthetic, key=lambda point: point[0])
    real = sorted(real or [], key=lambda point: point[0])
    if real and len(real) < 2:
        raise ValueError(f"the real curve needs two or more sizes, got {len(real)}")
    arms = [arm for _, arm in synthetic] + [arm for _, arm in real]
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"scaling points need distinct arm names, got {names}")
    boot = bootstrap_accuracies(arms, draws=draws,
                                generator=rng(seed, "eval_report", "scaling-evidence"))
    s_sizes = np.asarray([size for size, _ in synthetic], np.float64)
    r_sizes = np.asarray([size for size, _ in real], np.float64)
    s_boot, r_boot = boot[:, :len(synthetic)], boot[:, len(synthetic):]
    result = _curve_entry(s_sizes, arms[:len(synthetic)], s_boot, level)
    result.update(real_equivalent=None, real_curve=None, exchange_rate=None)
    if not real:
        return result
    result["real_curve"] = _curve_entry(r_sizes, arms[len(synthetic):], r_boot, level)
    s_means = np.asarray([arm.accuracy for _, arm in synthetic])
    r_means = np.asarray([arm.accuracy for _, arm in real])
    priced = float(s_sizes[-1] if priced_size is None else priced_size)
    if priced not in s_sizes:
        raise ValueError(f"priced_size {priced:g} is not a measured synthetic size "
                         f"{s_sizes.tolist()}")
    column = int(np.flatnonzero(s_sizes == priced)[0])
    real_fit = result["real_curve"]["fit"]
    rate = _priced(r_sizes, r_means, r_boot, real_fit, float(s_means[column]), s_boot[:, column],
                   level)
    value = rate["images_per_class"]
    result["exchange_rate"] = {
        "synthetic_images_per_class": round(priced, 3),
        "synthetic_accuracy": round(float(s_means[column]), 6),
        "real_images_per_class": value, "how": rate["how"], "ci95": rate["ci95"],
        "real_per_synthetic": None if value is None else round(value / priced, 4),
        "beyond_fraction": rate["beyond_fraction"], "below_fraction": rate["below_fraction"],
        "measured_real_range": [round(float(r_sizes[0]), 3), round(float(r_sizes[-1]), 3)]}
    equivalent = _priced(s_sizes, s_means, s_boot, result["fit"], float(r_means[-1]),
                         r_boot[:, -1], level)
    result["real_equivalent"] = {"real_images_per_class": round(float(r_sizes[-1]), 3),
                                 "real_accuracy": round(float(r_means[-1]), 6),
                                 "synthetic_images_per_class": equivalent.pop("images_per_class"),
                                 **equivalent}
    return result
