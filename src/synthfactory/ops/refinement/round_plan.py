"""One round's plan of the closed loop, read from validation results only: which classes get
how many of the round's extra images, with which recipe, and why (`ops/refinement/plan.py`
decides; this gathers its evidence and writes what it decided)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthfactory.ops.data.prompts import (PROMPTS_FILE, PromptRecord, display_name,
                                           load_display_names, read_prompts, write_prompts)
from synthfactory.ops.data.real_images import read_classes, read_split
from synthfactory.ops.refinement.plan import (PLAN_JSON, REFINED, TARGETED_BASE, UNIFORM,
                                              UNIFORM_PLAN, ClassPlan, ClassRecipe, PlanSettings,
                                              base_recipes, class_evidence, make_plan,
                                              refined_records, targeted_base_records,
                                              uniform_plan_records,
                                              uniform_records)
from synthfactory.ops.refinement.arms import evaluate_classifiers
from synthfactory.ops.refinement.rounds import RECORDS
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import dumps_json


@dataclass
class RoundPlan:
    """One round's plan: `plan.json`'s content, each class's plan, each arm's prompt records."""

    plan: dict[str, Any]
    classes: list[ClassPlan]
    records: dict[str, list[PromptRecord]]

    def write(self, directory: Path) -> None:
        """`plan.json` and each arm's records into `directory`."""
        (directory / PLAN_JSON).write_text(dumps_json(self.plan))
        for arm, records in self.records.items():
            write_prompts(directory / RECORDS[arm], records)


def plan_round(round_index: int, evaluated: str, require: Callable[..., Path],
               previous_plan: Path | None, settings: PlanSettings, display_names: str | None,
               seed: int, device: torch.device) -> RoundPlan:
    """Which classes get how many of the round's extra images, with which recipe, and why,
    from the evaluated arm's (asset `evaluated`) and the real arm's per-class accuracy on the
    val split, the confusion pairs and the filter's pass rates; the next round starts from the
    recipes of `previous_plan`."""
    real_dir = require("real_images")
    names = read_classes(real_dir)
    val_images, val_labels, _ = read_split(real_dir, "val")
    arm = evaluate_classifiers(require(evaluated), val_images, val_labels, len(names), device)
    real = evaluate_classifiers(require("classifier_real"), val_images, val_labels, len(names),
                                device)
    summary = json.loads((require("filtered_set") / SUMMARY_JSON).read_text())
    pass_rates = {name: row["pass_rate"] for name, row in summary["per_class"].items()}
    evidence = class_evidence(names, arm["per_class_accuracy"], real["per_class_accuracy"],
                              arm["confusion"], pass_rates)
    base_records = read_prompts(require("prompts", PROMPTS_FILE))
    base = base_recipes(base_records, len(names))
    current = base if previous_plan is None else recipes_of(previous_plan)
    plans = make_plan(evidence, settings, current, base)
    table = load_display_names(display_names) if display_names else None
    shown = [display_name(n, table) for n in names]
    at = {"round_index": round_index, "seed": seed}
    records = {
        REFINED: refined_records(plans, base_records, shown, **at),
        TARGETED_BASE: targeted_base_records(plans, base_records, **at),
        UNIFORM_PLAN: uniform_plan_records(plans, settings, current, base, base_records, shown,
                                           **at),
        UNIFORM: uniform_records(base_records, len(names), settings.budget, **at)}
    plan = {"round": round_index, "evaluated_arm": evaluated, "split": "val",
            "n_val": len(val_labels), "budget": settings.budget,
            "val_accuracy": {"evaluated": arm["accuracy_mean"], "real": real["accuracy_mean"]},
            "classes": [p.to_json() for p in plans],
            # The 2×2's other cells: what each arm generates per class (records say per image).
            "arms": {name: _per_class(records[name], names) for name in records}}
    return RoundPlan(plan, plans, records)


def _per_class(records: list[PromptRecord], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per class: how many images an arm makes and with which guidance scales."""
    return {name: {"images": sum(r.class_id == c for r in records),
                   "guidance": sorted({r.guidance for r in records if r.class_id == c})}
            for c, name in enumerate(names)}


def recipes_of(plan_path: Path) -> dict[int, ClassRecipe]:
    """The recipe each class had in a plan (the next round starts from it)."""
    classes = json.loads(plan_path.read_text())["classes"]
    return {c["class_id"]: ClassRecipe(guidance=tuple(c["recipe"]["guidance"]),
                                       templates=tuple(c["recipe"]["templates"]),
                                       negative_class=c["recipe"]["negative_class"])
            for c in classes}
