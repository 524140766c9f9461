"""The closed loop's 2×2 at equal image budget, judged by paired differences: which effect each
arm-pair difference measures, and its 95% interval and verdict from `ops/evaluation/comparisons.py`.

The arms (`plan.LOOP_ARMS`) cross allocation (targeted: the plan's; uniform) with recipe (the
plan's; the base), each adding the same number of extra images to the same synthetic set, with
the same classifier seeds. A control changes one thing, so:

- **targeting** is credited only by targeted − uniform at the *same* recipe: `refined −
  uniform_plan` (plan recipe) and `targeted_base − uniform` (base recipe);
- the **recipe** by plan − base at the same allocation: `refined − targeted_base` and
  `uniform_plan − uniform`;
- the **interaction** `(refined − uniform_plan) − (targeted_base − uniform)`: does targeting
  help more with the plan's recipe than with the base one (equivalently, the recipe more where
  the plan puts the images)?
- `refined − uniform`, the original control, changes both and credits neither; it is listed so
  the old figure keeps its interval.

Each arm's correctness is (1 replicate × seeds × test images): the loop's arms share the one
draw of everything upstream (generator, base synthetic set), so the intervals cover classifier
seeds (paired: seed k against seed k) and test images (paired: the same images in every
resample), not replicates of the upstream draw nor of the extra shards (one draw per arm).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.comparisons import (DRAWS, LEVEL, ArmCorrectness,
                                                     bootstrap_accuracies, compare, coverage,
                                                     percentile_interval, verdict)
from synthfactory.ops.refinement.plan import LOOP_ARMS, REFINED, TARGETED_BASE, UNIFORM, UNIFORM_PLAN
from synthfactory.ops.seeds import rng

# (effect, held fixed, a, b): a − b measures `effect` with `held` the same in both arms.
CONTRASTS = (
    ("targeting", "the plan's recipe", REFINED, UNIFORM_PLAN),
    ("targeting", "the base recipe", TARGETED_BASE, UNIFORM),
    ("recipe", "the plan's allocation", REFINED, TARGETED_BASE),
    ("recipe", "the uniform allocation", UNIFORM_PLAN, UNIFORM),
    ("targeting and recipe together (the original control; credits neither)", "nothing",
     REFINED, UNIFORM),
)
INTERACTION = "interaction"
KEPT = ("a", "b", "difference", "ci95", "verdict", "level", "covers", "not_covered", "paired",
        "draws")


def loop_correctness(predictions: Mapping[str, np.ndarray], labels: np.ndarray
                     ) -> dict[str, ArmCorrectness]:
    """Each arm's correctness (1 replicate × seeds × images) from its predicted labels (seeds ×
    images, every arm on the same images in the same order)."""
    missing = sorted(set(LOOP_ARMS) - set(predictions))
    if missing:
        raise ValueError(f"the 2×2 needs predictions of every arm; {missing} are missing")
    return {arm: ArmCorrectness.from_predictions(arm, np.asarray(predictions[arm]), labels)
            for arm in LOOP_ARMS}


def loop_comparisons(arms: Mapping[str, ArmCorrectness], *, draws: int = DRAWS, seed: int = 0
                     ) -> list[dict[str, Any]]:
    """Every contrast of `CONTRASTS` (`compare`'s record plus `effect` and `held`) and the
    interaction (the same record; its `a`/`b` name the two targeting differences)."""
    rows = []
    for effect, held, a, b in CONTRASTS:
        row = compare(arms[a], arms[b], draws=draws, seed=seed)
        rows.append({"effect": effect, "held": held, **{k: row[k] for k in KEPT}})
    order = [arms[REFINED], arms[UNIFORM_PLAN], arms[TARGETED_BASE], arms[UNIFORM]]
    values = bootstrap_accuracies(order, draws=draws,
                                  generator=rng(seed, "comparisons", "refinement", INTERACTION))
    contrast = (values[:, 0] - values[:, 1]) - (values[:, 2] - values[:, 3])
    low, high = percentile_interval(contrast, LEVEL)
    point = (order[0].accuracy - order[1].accuracy) - (order[2].accuracy - order[3].accuracy)
    covers, missing = coverage(order)
    rows.append({"effect": INTERACTION, "held": "nothing",
                 "a": f"({REFINED} − {UNIFORM_PLAN})", "b": f"({TARGETED_BASE} − {UNIFORM})",
                 "difference": round(float(point), 6),
                 "ci95": [round(low, 6), round(high, 6)], "verdict": verdict(low, high),
                 "level": LEVEL, "covers": covers, "not_covered": missing,
                 "paired": rows[0]["paired"], "draws": draws})
    return rows


def targeting_credit(comparisons: list[dict[str, Any]]) -> str:
    """One sentence: what targeting is credited with (only targeted − uniform at one recipe)."""
    parts = []
    for row in comparisons:
        if row["effect"] == "targeting":
            low, high = row["ci95"]
            parts.append(f"{row['a']} − {row['b']} at {row['held']}: "
                         f"{100 * row['difference']:+.2f} points [{100 * low:+.2f}, "
                         f"{100 * high:+.2f}], {row['verdict']}")
    verdicts = {row["held"]: row["verdict"] for row in comparisons if row["effect"] == "targeting"}
    better = [held for held, v in verdicts.items() if v == "better"]
    worse = [held for held, v in verdicts.items() if v == "worse"]
    if len(better) == len(verdicts):
        lead = "Targeting is credited at both recipes"
    elif better:
        lead = f"Targeting is credited at {better[0]} only"
    elif worse:
        lead = f"Targeting is not credited: it is worse at {' and '.join(worse)}"
    else:
        lead = "Targeting is not credited: indistinguishable from uniform at both recipes"
    return f"{lead} ({'; '.join(parts)})."
