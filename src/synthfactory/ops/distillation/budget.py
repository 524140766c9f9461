"""The share of the reference implementation's budget that a distilled cell ran.

A cell's `cell.json` records `budget_fraction` (`budget_fraction` below): for each learned
method the counts that ran (from the distillation's history: iterations, image updates, inner
network epochs, experts × expert epochs), the reference's counts at the same ipc, their ratios,
and one headline `fraction`:

- dm: iterations / 20,000 (`main_DM.py`).
- dc: image updates (iterations × outer loops) / (1000 × the reference's outer loop at the
  ipc); also the inner network epochs against the reference's (1000 × (outer − 1) × inner).
- gm_init: the same counts against DC's reference (it is DC's reduced control).
- mtt, datm: iterations / 5000 (`distill.py`); also expert epochs trained (experts × epochs)
  against 100 × 50 (`buffer.py`) and the matching settings beside the reference's
  (expert_epochs 3, max_start_epoch 25, syn_steps 20).

Selections (random, herding, kcenter) have no budget: None.
"""

from __future__ import annotations

from typing import Any

from synthfactory.ops.distillation.matching import (REFERENCE_DC_ITERATIONS,
                                                    REFERENCE_DM_ITERATIONS, REFERENCE_LOOPS)

REFERENCE_MTT = {"iterations": 5000, "experts": 100, "expert_epochs_trained": 50,
                 "expert_epochs": 3, "max_start_epoch": 25, "syn_steps": 20}


def _ratio(ran: float | None, reference: float | None) -> float | None:
    if ran is None or not reference:
        return None
    return round(ran / reference, 6)


def budget_fraction(method: str, ipc: int, settings: dict[str, Any], history: dict[str, Any]
                    ) -> dict[str, Any] | None:
    """The reference budget share of one distillation of `method` at `ipc`: `fraction` (the
    headline ratio, named by `basis`), `ran`, `reference` and every `ratios` entry. `settings`
    are the method's params as they ran, `history` the distillation's (what was counted)."""
    if method in ("random", "herding", "kcenter", "whole"):  # nothing learned: no budget
        return None
    iterations = history.get("iterations", settings.get("iterations"))
    if method == "dm":
        ran = {"iterations": iterations}
        reference = {"iterations": REFERENCE_DM_ITERATIONS}
        basis = "iterations"
    elif method in ("dc", "gm_init"):
        outer, inner = REFERENCE_LOOPS.get(ipc, (None, None))
        ran = {"iterations": iterations, "outer_loop": history.get("outer_loop"),
               "inner_loop": history.get("inner_loop"),
               "image_updates": history.get("image_updates"),
               "net_epochs": history.get("net_epochs")}
        reference = {"iterations": REFERENCE_DC_ITERATIONS, "outer_loop": outer,
                     "inner_loop": inner,
                     "image_updates": REFERENCE_DC_ITERATIONS * outer if outer else None,
                     "net_epochs": REFERENCE_DC_ITERATIONS * (outer - 1) * inner
                     if outer else None}
        basis = "image_updates"
    elif method in ("mtt", "datm"):
        experts, trained = history.get("experts"), history.get("expert_epochs")
        ran = {"iterations": iterations, "image_updates": history.get("image_updates", iterations),
               "experts": experts, "expert_epochs_trained": trained,
               "expert_epochs_total": experts * trained if experts and trained else None,
               "expert_epochs": settings.get("expert_epochs"),
               "max_start_epoch": settings.get("max_start_epoch"),
               "syn_steps": settings.get("syn_steps")}
        reference = {**REFERENCE_MTT, "image_updates": REFERENCE_MTT["iterations"],
                     "expert_epochs_total": REFERENCE_MTT["experts"]
                     * REFERENCE_MTT["expert_epochs_trained"]}
        basis = "iterations"
    else:
        raise ValueError(f"no reference budget for method {method!r}")
    ratios = {key: _ratio(ran[key], reference.get(key)) for key in ran
              if isinstance(ran[key], (int, float)) and reference.get(key)}
    return {"fraction": ratios.get(basis), "basis": basis, "ran": ran, "reference": reference,
            "ratios": ratios}
