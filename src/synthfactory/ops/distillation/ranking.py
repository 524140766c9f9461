"""DD-Ranking scores of a distilled set: IOR, HLR and LRS.

Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset Distillation" (arXiv
2505.13300), as implemented by their package `ddranking` 0.2.0 (PyPI;
`ddranking/metrics/hard_label.py` and `soft_label.py`, `compute_metrics`):

    IOR   = acc(distilled) − acc(random subset of the same size, same evaluation recipe)
    HLR   = acc(full real set, hard labels) − acc(distilled, hard labels)
    α     = w · IOR − (1 − w) · HLR                     (w = `lrs_lambda`, default 0.5)
    LRS   = (e^α − e^−1) / (e − e^−1)

With accuracies as fractions, IOR and HLR lie in [−1, 1], so α does too and LRS lies in [0, 1]
(the paper prints it ×100). In hard-label mode (`LabelRobustScoreHard`) every accuracy is a
hard-label one. In soft-label mode (`LabelRobustScoreSoft`) IOR compares the soft-label
accuracies of the distilled set and of the random subset (soft labels from the same teacher),
while HLR still uses the distilled set's hard-label accuracy — the hard-label control.

The package scores each evaluation run and averages the per-run scores (LRS is not linear, so
this is not LRS of the mean accuracies); paired sequences here do the same and return the means
and the per-run values. Differences from the package, stated: it feeds percentages into the
same formula (so its LRS leaves [0, 1]); here accuracies must be fractions. Its evaluation picks
the best of five learning rates by test accuracy where no learned rate is given; the accuracies
passed here come from synthfactory's own protocol (ops/distillation/protocol.py), one recipe for
the distilled set, the random subset and the full set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_WEIGHT = 0.5  # ddranking 0.2.0's `lrs_lambda`
PAPER = "Li et al. 2025, DD-Ranking, arXiv 2505.13300; ddranking 0.2.0"

Accuracies = float | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class DDRankingScores:
    """Means over evaluation runs (IOR, HLR, LRS) and the per-run values."""

    ior: float
    hlr: float
    lrs: float
    weight: float
    mode: str  # "hard" or "soft"
    per_run: dict[str, list[float]]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, with the definitions' source."""
        return {"ior": self.ior, "hlr": self.hlr, "lrs": self.lrs, "weight": self.weight,
                "mode": self.mode, "per_run": self.per_run, "definition": PAPER}


def _fractions(name: str, values: Accuracies) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name} must be one accuracy or a sequence of them, got {values!r}")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{name} must be accuracies in [0, 1] (fractions, not percent), "
                         f"got {array.tolist()}")
    return array


def label_robust_score(ior: float, hlr: float, weight: float = DEFAULT_WEIGHT) -> float:
    """LRS = (e^α − e^−1) / (e − e^−1), α = w·IOR − (1 − w)·HLR."""
    alpha = weight * ior - (1 - weight) * hlr
    return (math.exp(alpha) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def dd_ranking_scores(distilled: Accuracies, random: Accuracies, full: Accuracies, *,
                      distilled_hard: Accuracies | None = None,
                      weight: float = DEFAULT_WEIGHT) -> DDRankingScores:
    """IOR, HLR and LRS (definitions in the module docstring) from test accuracies (fractions).

    `distilled` and `random` are accuracies of the distilled set and of a random real subset of
    the same size under the same evaluation recipe and label mode; `full` the hard-label
    accuracy of the whole real train set. Hard-label mode: leave `distilled_hard` out.
    Soft-label mode: `distilled` and `random` are soft-label accuracies and `distilled_hard`
    the distilled set's hard-label accuracy (HLR's). Sequences are paired evaluation runs
    (equal lengths, or one value broadcast); the scores are the means of per-run scores.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight {weight} must be in [0, 1] (ddranking's lrs_lambda)")
    arrays = {"distilled": _fractions("distilled", distilled),
              "random": _fractions("random", random), "full": _fractions("full", full)}
    mode = "hard" if distilled_hard is None else "soft"
    arrays["distilled_hard"] = (arrays["distilled"] if distilled_hard is None
                                else _fractions("distilled_hard", distilled_hard))
    runs = {len(a) for a in arrays.values()} - {1}
    if len(runs) > 1:
        raise ValueError("paired accuracies must have equal lengths (or one value), got "
                         + ", ".join(f"{k} {len(v)}" for k, v in arrays.items()))
    n = runs.pop() if runs else 1
    a = {k: np.broadcast_to(v, (n,)) for k, v in arrays.items()}
    ior = a["distilled"] - a["random"]
    hlr = a["full"] - a["distilled_hard"]
    lrs = np.array([label_robust_score(i, h, weight) for i, h in zip(ior, hlr, strict=True)])
    return DDRankingScores(ior=float(ior.mean()), hlr=float(hlr.mean()), lrs=float(lrs.mean()),
                           weight=weight, mode=mode,
                           per_run={"ior": ior.tolist(), "hlr": hlr.tolist(),
                                    "lrs": lrs.tolist()})
