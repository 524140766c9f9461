"""The comparisons the report makes, each a paired difference with a 95% interval and a verdict.

Which pairs (the report exists for them): every arm against the real arm (so mixed vs real,
synthetic vs real, …), filtered against synthetic (does the filter help?), and every learned
distillation cell against the random subset of the same size, source and evaluation
architecture (does distilling beat picking?). The closed loop adds its own (targeted vs uniform
at the same recipe: ops/refinement). Each comparison resamples what the arms' correctness arrays
hold (`comparisons.ArmCorrectness`: replicates × classifier seeds × test images) with the same
test images for both arms in a draw, and says what its interval covers and what it does not.

Replicate ids say which arms share a random draw upstream of their classifiers: the arms built
from the generated shards of one replicate (synthetic, filtered, mixed, distilled-from-filtered)
share its id and are resampled together; the real and retrieved arms draw nothing from the
generator (id `real`). A distillation cell's repeats are its own draws (ids `<cell>-r<k>`), not
paired with another cell's. Intervals are per comparison, not corrected for how many the report
makes: with 10 comparisons, about one in two reports would show at least one `better` or
`worse` by chance at 95% if nothing differed — the report says so beside the verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.comparisons import ArmCorrectness, arm_interval, compare

DRAWS = 2000
# Arms that take nothing from the generated images: one shared id, resampled as one draw.
REAL_REPLICATE = "real"
GENERATOR_FREE = frozenset({"real", "retrieved", "zero_shot"})
MULTIPLICITY_NOTE = ("Each interval is a 95% interval for its own comparison, not corrected for "
                     "the number of comparisons the report makes: with many of them, one "
                     "verdict other than `indistinguishable` can arise by chance.")


def arm_correctness(arm: str, predictions: np.ndarray, labels: np.ndarray,
                    replicate_ids: Sequence[str] | None = None) -> ArmCorrectness:
    """An arm's correctness from its test predictions (seeds × images, or replicates × seeds ×
    images) with the replicate ids the module docstring describes (default: one replicate,
    `real` for the generator-free arms, else `r0`)."""
    if replicate_ids is None:
        replicate_ids = (REAL_REPLICATE,) if arm in GENERATOR_FREE else ("r0",)
    return ArmCorrectness.from_predictions(arm, predictions, labels, tuple(replicate_ids))


def arm_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """The (a, b) pairs the report compares among the arms it measured, in report order."""
    pairs = [(arm, "real") for arm in arms if arm != "real" and "real" in arms]
    if "filtered" in arms and "synthetic" in arms:
        pairs.append(("filtered", "synthetic"))
    return pairs


def cell_pairs(cells: Sequence[tuple[str, int, str, str]]) -> list[tuple[int, int]]:
    """Index pairs (learned cell, random cell) over (method, ipc, source, architecture) rows:
    each learned cell against the random subset of the same ipc, source and architecture."""
    random = {(ipc, source, architecture): index
              for index, (method, ipc, source, architecture) in enumerate(cells)
              if method == "random"}
    return [(index, random[(ipc, source, architecture)])
            for index, (method, ipc, source, architecture) in enumerate(cells)
            if method != "random" and (ipc, source, architecture) in random]


def arm_comparisons(correct: Mapping[str, ArmCorrectness], arms: Sequence[str], *,
                    seed: int, draws: int = DRAWS) -> list[dict[str, Any]]:
    """metrics.json's `comparisons` among the arms (see `arm_pairs`)."""
    measured = [arm for arm in arms if arm in correct]
    return [{"kind": "arm", **compare(correct[a], correct[b], draws=draws, seed=seed)}
            for a, b in arm_pairs(measured)]


def cell_comparisons(cells: Sequence[dict[str, Any]], correct: Sequence[ArmCorrectness], *,
                     seed: int, draws: int = DRAWS) -> list[dict[str, Any]]:
    """metrics.json's `comparisons` of each distillation cell against random (see
    `cell_pairs`); `cells` are the distillation table's rows, `correct` their arrays."""
    keys = [(row["method"], row["ipc"], row["source"], row["architecture"]) for row in cells]
    found = []
    for learned, random in cell_pairs(keys):
        row = cells[learned]
        found.append({"kind": "distillation", "architecture": row["architecture"],
                      **compare(correct[learned], correct[random], draws=draws, seed=seed)})
    return found


def arm_intervals(correct: Mapping[str, ArmCorrectness], *, seed: int,
                  draws: int = DRAWS) -> dict[str, dict[str, Any]]:
    """Each arm's 95% accuracy interval, with what it covers."""
    return {arm: arm_interval(arm_correct, draws=draws, seed=seed)
            for arm, arm_correct in correct.items()}
