"""Paired intervals and verdicts: is arm a better than arm b on the real test images, and how
sure is that?

The quantity is the classification accuracy score (Ravuri & Vinyals 2019; see DESIGN.md,
"Research protocols"): train fresh classifiers on an arm's images, count the real held-out test
images they get right. Three kinds of randomness move that number, and the interval resamples
each of them:

- **replicates** — the independent draws of everything random upstream of the classifiers (the
  sampling seeds and shards of the generated set, its scores and filter, the distilled set). Arms
  that share a replicate id share those draws (filtered and synthetic of replicate "r1" come from
  the same shards) and are resampled together: the same drawn ids for both.
- **classifier seeds** — initialisation and data order. Seed k of every arm shares them, so seed
  indices are resampled jointly for both arms (when both trained the same number of seeds).
- **test images** — the test set is a sample of the population it stands for (at 98% accuracy on
  539 images one standard error is ~0.6 points). Both arms are scored on the same images, so every
  bootstrap draw resamples the same image indices for both: that pairing removes the difficulty
  the two arms share from their difference.

The three axes are crossed (every seed of every replicate is scored on every image), so each
draw resamples them independently with replacement — the pigeonhole bootstrap for crossed
random effects (Owen 2007; the hierarchical bootstrap of Davison & Hinkley 1997, §3.8, for
nested ones), used paired across the two arms as in the paired bootstrap for comparing systems
on one test set (Efron & Tibshirani 1993, §15; Koehn 2004; Bouthillier et al. 2021 on seeds and
data sampling as sources of benchmark variance). The interval is the 2.5 and 97.5 percentiles
of the resampled difference of mean accuracies; the verdict is `better` when it lies above zero,
`worse` below, `indistinguishable` when it contains zero.

NOT covered: the generator's weights (one trained or pretrained model: every replicate shares
it), the choice of test population itself (the interval is for images like these test images),
the hyper-parameters chosen on the validation split, and the machine (results reproduce for one
machine type, torch build and thread count). With few levels (2 replicates, 3 seeds) a bootstrap
estimates those axes' variance with few degrees of freedom; `covers` names the axes with more
than one level, and an axis with a single level in both arms is listed in `not_covered`. Each
interval is a 95% interval for its own comparison, not a simultaneous one over all of them.

Calibration, measured on simulated predictions (tests/ops/evaluation/test_comparisons.py: 539
images, ~98% accuracy, 2 replicates × 3 seeds, 200 experiments of 400 draws): the interval
covers the population difference in 192/200 (a true gap) and 197/200 (no gap). Resampling
crossed axes counts each classifier's own noise on an image once per axis, so the interval is
conservative (199–200/200) when that noise dominates, and it is slightly short (185–188/200)
when replicate effects dominate, since two replicates estimate their variance with one degree
of freedom: more replicates are the cure, not a wider bootstrap.

Vectorised: the accuracy of seed s of replicate r under a resample of the test images is
`correct[r, s, :] @ counts / N` with `counts` the multiplicities of the drawn images, and a
resample of replicates and seeds is a weighted mean of those accuracies with the multiplicities
of the drawn replicates and seeds as weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthfactory.ops.seeds import rng

DRAWS = 2000
LEVEL = 0.95
# Image resamples are made this many image-draws at a time (rows × images), so that a large test
# set does not hold draws × images counts in memory at once.
CHUNK_CELLS = 1 << 22
AXES = ("replicates", "classifier seeds", "test images")
VERDICTS = ("better", "worse", "indistinguishable")


@dataclass(frozen=True, eq=False)
class ArmCorrectness:
    """Which real test images each classifier of an arm got right.

    `correct`: boolean (R, S, N) — replicates × classifier seeds × test images, the same N test
    images in the same order for every arm. `replicate_ids`: R distinct strings; arms that share
    an id share the upstream random draws of that replicate. An arm with nothing random upstream
    (real) has one replicate.
    """

    name: str
    correct: np.ndarray
    replicate_ids: tuple[str, ...] = ("r0",)
    _columns: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        correct = np.asarray(self.correct)
        if correct.dtype != np.bool_:
            raise ValueError(f"arm {self.name!r}: correct has dtype {correct.dtype}; expected a "
                             "boolean array (prediction == label per test image)")
        if correct.ndim != 3:
            raise ValueError(f"arm {self.name!r}: correct has shape {correct.shape}; expected "
                             "(replicates, classifier seeds, test images), e.g. (1, 3, 539)")
        if 0 in correct.shape:
            raise ValueError(f"arm {self.name!r}: correct has shape {correct.shape}; every axis "
                             "needs at least one replicate, seed and test image")
        ids = tuple(str(i) for i in self.replicate_ids)
        if len(ids) != correct.shape[0]:
            raise ValueError(f"arm {self.name!r}: {len(ids)} replicate_ids {list(ids)} for "
                             f"{correct.shape[0]} replicates; give one id per replicate")
        if len(set(ids)) != len(ids):
            raise ValueError(f"arm {self.name!r}: replicate_ids {list(ids)} repeat an id; each "
                             "replicate needs its own")
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "replicate_ids", ids)
        # (N, R·S) integers: a resample's correct counts are an exact integer product, the same
        # on every machine and thread count (a float BLAS product need not be).
        object.__setattr__(self, "_columns", np.ascontiguousarray(
            correct.reshape(-1, correct.shape[2]).T, dtype=np.int32))

    @classmethod
    def from_predictions(cls, name: str, predictions: np.ndarray | Sequence[Any],
                         labels: np.ndarray, replicate_ids: Sequence[str] = ("r0",),
                         ) -> ArmCorrectness:
        """From predicted labels (R, S, N) — or (S, N) for one replicate — and the N labels."""
        predictions = np.asarray(predictions)
        if predictions.ndim == 2:
            predictions = predictions[None]
        labels = np.asarray(labels)
        if predictions.ndim != 3 or predictions.shape[2] != len(labels):
            raise ValueError(f"arm {name!r}: predictions of shape {predictions.shape} for "
                             f"{len(labels)} labels; expected (replicates, seeds, {len(labels)})")
        return cls(name, predictions == labels[None, None, :], tuple(replicate_ids))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.correct.shape)  # type: ignore[return-value]

    @property
    def accuracy(self) -> float:
        """Mean accuracy over replicates, seeds and test images."""
        return float(self.correct.mean())


def _multiplicities(generator: np.random.Generator, draws: int, levels: int) -> np.ndarray:
    """(draws, levels) int32 counts of a resample with replacement of `levels` items, per draw."""
    if levels == 1:
        return np.ones((draws, 1), dtype=np.int32)
    picks = generator.integers(0, levels, (draws, levels))
    picks += (np.arange(draws) * levels)[:, None]
    return np.bincount(picks.ravel(), minlength=draws * levels).reshape(
        draws, levels).astype(np.int32)


def _check_together(arms: Sequence[ArmCorrectness]) -> None:
    if not arms:
        raise ValueError("no arms to resample: give at least one ArmCorrectness")
    sizes = {arm.name: arm.shape[2] for arm in arms}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"arms are scored on different numbers of test images {sizes}; every "
                         "arm must be scored on the same test images in the same order")
    groups = [set(arm.replicate_ids) for arm in arms if arm.shape[0] > 1]
    for i, first in enumerate(groups):
        for second in groups[i + 1:]:
            if first & second and first != second:
                raise ValueError(
                    f"replicate ids {sorted(first)} and {sorted(second)} overlap without being "
                    "equal: arms are resampled together only when they hold the same replicates; "
                    "restrict both to their shared replicates (shared_replicates)")


def bootstrap_accuracies(arms: Sequence[ArmCorrectness], *, draws: int = DRAWS,
                         generator: np.random.Generator) -> np.ndarray:
    """(draws, len(arms)) mean accuracies of every arm under the same bootstrap draws.

    Each draw resamples the N test images once for all arms; the seed indices once for all arms
    with the same number of seeds (seed k pairs with seed k); the replicates once for all arms
    holding the same replicate ids (aligned by id). Arms with disjoint replicate ids are
    resampled independently, and an arm with one replicate keeps it.
    """
    _check_together(arms)
    if draws < 1:
        raise ValueError(f"draws {draws} must be at least 1")
    n_images = arms[0].shape[2]
    # One seed resample per seed count and one replicate resample per set of ids, drawn in a
    # fixed order so that the same arms and generator state give the same numbers.
    seed_weights = {s: _multiplicities(generator, draws, s)
                    for s in sorted({arm.shape[1] for arm in arms})}
    id_sets = sorted({tuple(sorted(arm.replicate_ids)) for arm in arms if arm.shape[0] > 1})
    replicate_weights = {ids: _multiplicities(generator, draws, len(ids)) for ids in id_sets}
    result = np.empty((draws, len(arms)))
    rows = max(1, CHUNK_CELLS // n_images)
    for start in range(0, draws, rows):
        stop = min(draws, start + rows)
        counts = _multiplicities(generator, stop - start, n_images)
        for column, arm in enumerate(arms):
            n_replicates, n_seeds, _ = arm.shape
            per_classifier = (counts @ arm._columns).reshape(-1, n_replicates, n_seeds) / n_images
            if n_replicates == 1:
                weights_r = np.ones((stop - start, 1), dtype=np.int32)
            else:
                ordered = tuple(sorted(arm.replicate_ids))
                position = [ordered.index(i) for i in arm.replicate_ids]
                weights_r = replicate_weights[ordered][start:stop][:, position]
            weights_s = seed_weights[n_seeds][start:stop]
            result[start:stop, column] = (weights_r[:, :, None] * weights_s[:, None, :]
                                          * per_classifier).sum((1, 2)) / (n_replicates * n_seeds)
    return result


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (1 − level)/2 and (1 + level)/2 percentiles of bootstrap values."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} must be in (0, 1), e.g. 0.95")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """`better` when the interval of a − b lies above zero, `worse` below, else
    `indistinguishable`."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "indistinguishable"


def coverage(arms: Sequence[ArmCorrectness]) -> tuple[list[str], list[str]]:
    """The randomness an interval over these arms resamples, and what it leaves out."""
    levels = {"replicates": max(arm.shape[0] for arm in arms),
              "classifier seeds": max(arm.shape[1] for arm in arms),
              "test images": max(arm.shape[2] for arm in arms)}
    covers = [axis for axis in AXES if levels[axis] > 1]
    missing = []
    if levels["replicates"] == 1:
        missing.append("replicates: one draw of everything upstream of the classifiers (the "
                       "generated set, its filter, the distilled set), so that randomness is not "
                       "in the interval (an arm with nothing random upstream, real, needs none)")
    if levels["classifier seeds"] == 1:
        missing.append("classifier seeds: one classifier per arm")
    if levels["test images"] == 1:
        missing.append("test images: one test image")
    missing.append("the generator's weights (shared by every replicate)")
    return covers, missing


def _round(value: float) -> float:
    return round(float(value), 6)


def arm_interval(arm: ArmCorrectness, *, draws: int = DRAWS, seed: int = 0,
                 level: float = LEVEL) -> dict[str, Any]:
    """An arm's mean accuracy and its percentile interval from the bootstrap over replicates,
    classifier seeds and test images: `{arm, accuracy, ci95, covers, not_covered, draws}`."""
    values = bootstrap_accuracies([arm], draws=draws,
                                  generator=rng(seed, "comparisons", "arm", arm.name))[:, 0]
    low, high = percentile_interval(values, level)
    covers, missing = coverage([arm])
    return {"arm": arm.name, "accuracy": _round(arm.accuracy), "ci95": [_round(low), _round(high)],
            "level": level, "covers": covers, "not_covered": missing, "draws": draws}


def compare(a: ArmCorrectness, b: ArmCorrectness, *, draws: int = DRAWS, seed: int = 0,
            level: float = LEVEL) -> dict[str, Any]:
    """The paired difference acc(a) − acc(b) with its bootstrap interval and verdict:
    `{a, b, difference, ci95: [lo, hi], verdict, covers, not_covered, paired, draws}`.

    `paired` says which axes were resampled jointly for both arms: test images always; seeds
    when both arms trained the same number; replicates when both hold the same replicate ids.
    """
    if a.name == b.name:
        raise ValueError(f"compare({a.name!r}, {b.name!r}): an arm against itself")
    values = bootstrap_accuracies([a, b], draws=draws,
                                  generator=rng(seed, "comparisons", a.name, b.name))
    low, high = percentile_interval(values[:, 0] - values[:, 1], level)
    covers, missing = coverage([a, b])
    paired = ["test images"]
    if a.shape[1] == b.shape[1] and a.shape[1] > 1:
        paired.insert(0, "classifier seeds")
    if a.shape[0] > 1 and set(a.replicate_ids) == set(b.replicate_ids):
        paired.insert(0, "replicates")
    return {"a": a.name, "b": b.name, "difference": _round(a.accuracy - b.accuracy),
            "ci95": [_round(low), _round(high)], "verdict": verdict(low, high),
            "level": level, "covers": covers, "not_covered": missing, "paired": paired,
            "draws": draws}


def shared_replicates(a: ArmCorrectness, b: ArmCorrectness
                      ) -> tuple[ArmCorrectness, ArmCorrectness]:
    """Both arms restricted to the replicate ids they share (in a's order), for a paired
    comparison when one arm has replicates the other lacks (a replicate still running or failed).
    """
    shared = [i for i in a.replicate_ids if i in set(b.replicate_ids)]
    if not shared:
        raise ValueError(f"arms {a.name!r} {list(a.replicate_ids)} and {b.name!r} "
                         f"{list(b.replicate_ids)} share no replicate id")

    def restrict(arm: ArmCorrectness) -> ArmCorrectness:
        rows = [arm.replicate_ids.index(i) for i in shared]
        return ArmCorrectness(arm.name, arm.correct[rows], tuple(shared))

    return restrict(a), restrict(b)
