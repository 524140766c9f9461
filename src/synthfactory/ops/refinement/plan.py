"""Weak-class refinement: where to spend the next images, with which recipe, and why.

A plan reads *validation* evidence only (the test split is the report's, read once; a loop that
chose on test would tune to it): per class, the refined arm's accuracy against the real arm's
(the gap), the most frequent wrong prediction (the confusion pair) and the judge's pass rate on
the class's generated images. It gives each weak class (gap > `min_gap`) a share of the budget
proportional to its gap, and picks recipe changes from a declared list by this rule:

- judge pass rate ≥ `pass_rate_high` → `lower_guidance` (scales × `guidance_factor`, floor
  `min_guidance`, never raised; `guidance_diversity` once at the floor): the judge recognises
  the images but the classifier still fails on real ones, so the images are typical and alike
  (high guidance collapses a class onto a few shapes); lower guidance buys diversity;
- `pass_rate_low` ≤ pass rate < `pass_rate_high` → `guidance_diversity` (`diversity_levels`
  scales from `min_guidance` to the base's highest): partly recognisable, so spread the scales
  rather than move them;
- pass rate < `pass_rate_low` → guidance kept: the generator often misses the class, lower
  guidance would make that worse;
- text backend → `more_templates` (half the class's new images use `templates`): more varied
  text, more varied images;
- text backend, one class takes ≥ `confusion_share` of the class's validation errors →
  `negative_prompt` naming that class: steer the images away from what they are mistaken for.

`more_images` always applies (it is the budget); a class with no applicable change gets only
that. When no class is weak, the budget is spread uniformly with the current recipe.

The loop is judged at equal cost in a 2×2 (allocation × recipe), every arm adding the same
number of extra images to the same synthetic set:

| allocation, recipe | the plan's | the base |
|---|---|---|
| the plan's (targeted) | `refined` | `targeted_base` |
| uniform over classes | `uniform_plan` | `uniform` (the original control) |

Targeting is credited only by targeted − uniform at the same recipe, the recipe by plan − base
at the same allocation. "The plan's recipe" under a uniform allocation
(`uniform_plan_recipes`): a class the plan gave images keeps its planned recipe; a class it gave
none gets the plan's recipe changes applied to its own recipe by the rule's transformations (the
guidance change holding most of the plan's images, and `more_templates` when the plan used it;
`negative_prompt` names one class's confusion partner and stays where the plan put it). So when
the plan lowers guidance 2 → 1 for its weak classes, `uniform_plan` makes every image at
guidance 1, like `refined`: the two differ only in which classes get the images. Keeping the old
recipe for the classes the plan left alone would give `uniform_plan` fewer images at the new
recipe than `refined`, and the recipe's own effect would leak into "targeting".

Text changes need a text-to-image backend: the embedded DDPM is class-conditional and has no
text, so on it the plan uses the guidance changes and more images only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from synthfactory.ops.data.prompts import PromptRecord
from synthfactory.ops.seeds import derive_seed

PLAN_JSON = "plan.json"
REFINED = "refined"  # the arm that follows the plan: its allocation and its recipe
UNIFORM = "uniform"  # the equal-budget control: as many images spread over classes, base recipe
TARGETED_BASE = "targeted_base"  # the plan's allocation, base recipe
UNIFORM_PLAN = "uniform_plan"  # uniform allocation, the plan's recipe (`uniform_plan_recipes`)
# The 2×2 at equal image budget: arm -> (allocation, recipe).
LOOP_ARMS = {REFINED: ("targeted", "plan"), TARGETED_BASE: ("targeted", "base"),
             UNIFORM_PLAN: ("uniform", "plan"), UNIFORM: ("uniform", "base")}
# Sample-key prefixes of each arm's extra images (`r1-000000`, `tb1-…`): distinct per arm.
ARM_PREFIX = {REFINED: "r", UNIFORM: "u", TARGETED_BASE: "tb", UNIFORM_PLAN: "up"}


@dataclass(frozen=True)
class PlanSettings:
    """The rule's knobs (mirrors `params.yaml: refinement`) and whether the backend has text."""

    budget: int
    recipes: tuple[str, ...] = ("lower_guidance", "guidance_diversity", "more_templates",
                                "negative_prompt")
    min_gap: float = 0.02
    pass_rate_high: float = 0.9
    pass_rate_low: float = 0.5
    confusion_share: float = 0.3
    guidance_factor: float = 0.5
    min_guidance: float = 1.0
    diversity_levels: int = 3
    templates: tuple[str, ...] = ()
    text_backend: bool = False


@dataclass(frozen=True)
class ClassEvidence:
    """What validation says about one class (accuracies are means over classifier seeds)."""

    class_id: int
    name: str
    val_accuracy: float
    real_val_accuracy: float
    pass_rate: float | None
    confused_with: int | None
    confusion_share: float
    n_val: int

    @property
    def gap(self) -> float:
        """How far the class trails the real arm (negative: it does better)."""
        return self.real_val_accuracy - self.val_accuracy


@dataclass(frozen=True)
class ClassRecipe:
    """How a class's images are made: guidance scales cycled, extra templates, negative class."""

    guidance: tuple[float, ...]
    templates: tuple[str, ...] = ()
    negative_class: int | None = None


@dataclass
class ClassPlan:
    """One class's share of the budget, its recipe and the reason."""

    class_id: int
    name: str
    images: int
    changes: list[str]
    recipe: ClassRecipe
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The class plan as JSON (recipe flattened)."""
        record = asdict(self)
        record["recipe"] = {"guidance": list(self.recipe.guidance),
                            "templates": list(self.recipe.templates),
                            "negative_class": self.recipe.negative_class}
        return record


def class_evidence(names: Sequence[str], val_per_class: Sequence[float],
                   real_val_per_class: Sequence[float], val_confusion: np.ndarray,
                   pass_rates: dict[str, float] | None) -> list[ClassEvidence]:
    """Per-class evidence from validation results (confusion: rows true, summed over seeds)."""
    confusion = np.asarray(val_confusion)
    evidence = []
    for class_id, name in enumerate(names):
        row = confusion[class_id].copy()
        n_val = int(row.sum())
        row[class_id] = 0
        errors = int(row.sum())
        confused = int(row.argmax()) if errors else None
        evidence.append(ClassEvidence(
            # A class without validation images (accuracy None) shows no gap: no extra
            # images are planned for it, and n_val = 0 records why.
            class_id=class_id, name=name, val_accuracy=float(val_per_class[class_id] or 0.0),
            real_val_accuracy=float(real_val_per_class[class_id] or 0.0),
            pass_rate=None if pass_rates is None else pass_rates.get(name),
            confused_with=confused,
            confusion_share=float(row[confused] / errors) if confused is not None else 0.0,
            n_val=n_val))
    return evidence


def allocate(weights: Sequence[float], budget: int, tie_offset: int = 0) -> list[int]:
    """Split `budget` images in proportion to `weights` (largest remainder; exact total).

    Ties in the remainders go to classes in order starting at `tie_offset` (rotated per round,
    so a uniform split that does not divide evenly favours different classes each round).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if budget < 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"cannot allocate {budget} images over weights {weights.tolist()}")
    exact = budget * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    n = len(weights)
    order = sorted(range(n), key=lambda i: (-(exact[i] - counts[i]), (i - tie_offset) % n))
    for i in order[:budget - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def base_recipes(base_records: Sequence[PromptRecord], n_classes: int) -> dict[int, ClassRecipe]:
    """Each class's recipe in the prompts: its guidance scales in order of first use."""
    recipes = {}
    for class_id in range(n_classes):
        scales = list(dict.fromkeys(r.guidance for r in base_records if r.class_id == class_id))
        if not scales:
            raise ValueError(f"the prompts have no record of class {class_id}")
        recipes[class_id] = ClassRecipe(guidance=tuple(scales))
    return recipes


def make_plan(evidence: Sequence[ClassEvidence], settings: PlanSettings,
              current: dict[int, ClassRecipe], base: dict[int, ClassRecipe]) -> list[ClassPlan]:
    """Which classes get how many of the budget's images, with which recipe, and why.

    `current` is each class's recipe before this round (the base recipe in round 1, the last
    plan's afterwards), `base` the prompts' own (the top of the guidance-diversity range).
    """
    weak = [e for e in evidence if e.gap > settings.min_gap]
    if not weak:
        counts = allocate([1.0] * len(evidence), settings.budget)
        return [ClassPlan(e.class_id, e.name, count, ["more_images"], current[e.class_id],
                          f"no class trails the real arm by more than {settings.min_gap:.2f} on "
                          "validation: the budget is spread uniformly, recipe unchanged",
                          _evidence_json(e)) for e, count in zip(evidence, counts, strict=True)]
    weights = [max(e.gap, 0.0) if e.gap > settings.min_gap else 0.0 for e in evidence]
    counts = allocate(weights, settings.budget)
    plans = []
    for e, count in zip(evidence, counts, strict=True):
        if count == 0:
            why = (f"validation accuracy {e.val_accuracy:.2f} against the real arm's "
                   f"{e.real_val_accuracy:.2f} (gap {e.gap:+.2f}, not above "
                   f"{settings.min_gap:.2f}): no extra images")
            plans.append(ClassPlan(e.class_id, e.name, 0, [], current[e.class_id], why,
                                   _evidence_json(e)))
            continue
        changes, recipe, reasons = _recipe_changes(e, settings, current[e.class_id],
                                                   base[e.class_id])
        why = (f"validation accuracy {e.val_accuracy:.2f} against the real arm's "
               f"{e.real_val_accuracy:.2f} (gap {e.gap:.2f}): {count} of {settings.budget} "
               f"images in proportion to the gap; " + "; ".join(reasons))
        plans.append(ClassPlan(e.class_id, e.name, count, ["more_images", *changes], recipe,
                               why, _evidence_json(e)))
    return plans


def _recipe_changes(e: ClassEvidence, settings: PlanSettings, current: ClassRecipe,
                    base: ClassRecipe) -> tuple[list[str], ClassRecipe, list[str]]:
    """The rule of the module docstring for one weak class."""
    enabled = set(settings.recipes)
    changes: list[str] = []
    reasons: list[str] = []
    recipe = current
    rate = "unknown" if e.pass_rate is None else f"{e.pass_rate:.0%}"
    diverse = _diverse_scales(settings, base)
    if e.pass_rate is not None and e.pass_rate >= settings.pass_rate_high:
        lowered = _lowered(settings, current)
        if "lower_guidance" in enabled and lowered != tuple(sorted(current.guidance)):
            changes.append("lower_guidance")
            recipe = replace(recipe, guidance=lowered)
            reasons.append(f"the judge passes {rate} of its images (recognisable but alike): "
                           f"guidance {list(current.guidance)} → {list(lowered)}")
        elif "guidance_diversity" in enabled and diverse != current.guidance:
            changes.append("guidance_diversity")
            recipe = replace(recipe, guidance=diverse)
            reasons.append(f"the judge passes {rate} of its images and guidance is already at "
                           f"its floor: spread scales {list(diverse)}")
        else:
            reasons.append(f"the judge passes {rate} of its images; no guidance change left")
    elif e.pass_rate is None or e.pass_rate >= settings.pass_rate_low:
        if "guidance_diversity" in enabled and diverse != current.guidance:
            changes.append("guidance_diversity")
            recipe = replace(recipe, guidance=diverse)
            reasons.append(f"the judge passes {rate} of its images: spread guidance over "
                           f"{list(diverse)}")
        else:
            reasons.append(f"the judge passes {rate} of its images; guidance kept")
    else:
        reasons.append(f"the judge passes only {rate} of its images (the generator often misses "
                       "the class): guidance kept, lower guidance would make that worse")
    if settings.text_backend and "more_templates" in enabled and settings.templates \
            and not current.templates:
        changes.append("more_templates")
        recipe = replace(recipe, templates=tuple(settings.templates))
        reasons.append(f"half its images use {len(settings.templates)} more templates")
    if settings.text_backend and "negative_prompt" in enabled and e.confused_with is not None \
            and e.confusion_share >= settings.confusion_share:
        changes.append("negative_prompt")
        recipe = replace(recipe, negative_class=e.confused_with)
        reasons.append(f"{e.confusion_share:.0%} of its validation errors are class "
                       f"#{e.confused_with}: a negative prompt names it")
    if not changes:
        reasons.append("more images with the current recipe")
    return changes, recipe, reasons


def _lowered(settings: PlanSettings, current: ClassRecipe) -> tuple[float, ...]:
    """`lower_guidance`: every scale × `guidance_factor`, floor `min_guidance`; never raises a
    scale (one already below the floor, 0 for a guidance-free model, stays)."""
    return tuple(sorted({min(g, max(settings.min_guidance, round(g * settings.guidance_factor, 4)))
                         for g in current.guidance}))


def _diverse_scales(settings: PlanSettings, base: ClassRecipe) -> tuple[float, ...]:
    """`diversity_levels` scales evenly from `min_guidance` to the base's highest (at least +1)."""
    top = max(max(base.guidance), settings.min_guidance + 1.0)
    return tuple(round(float(g), 4) for g in np.linspace(settings.min_guidance, top,
                                                          settings.diversity_levels))


def _evidence_json(e: ClassEvidence) -> dict[str, Any]:
    return {"val_accuracy": e.val_accuracy, "real_val_accuracy": e.real_val_accuracy,
            "gap": e.gap, "pass_rate": e.pass_rate, "confused_with": e.confused_with,
            "confusion_share": e.confusion_share, "n_val": e.n_val}


def refined_records(plans: Sequence[ClassPlan], base_records: Sequence[PromptRecord],
                    shown_names: Sequence[str], *, round_index: int, seed: int
                    ) -> list[PromptRecord]:
    """The prompt records the plan asks for (its allocation, its recipe), classes interleaved so
    every shard is balanced.

    Each image starts from the class's base records (cycled: text, template, negative text)
    and takes the plan's guidance (cycled); with extra templates every other image uses one;
    with a negative class its name is added to the negative text. Seeds derive from (seed,
    "refined_shards", round, "refined", index): new images, never copies of the base set.
    """
    return _recipe_records({p.class_id: (p.images, p.recipe) for p in plans}, base_records,
                           shown_names, REFINED, round_index, seed)


def targeted_base_records(plans: Sequence[ClassPlan], base_records: Sequence[PromptRecord], *,
                          round_index: int, seed: int) -> list[PromptRecord]:
    """The plan's allocation with the base recipe: each class's images cycle through its own
    base records unchanged (as `uniform_records` does), seeds from (…, "targeted_base", index)."""
    return _base_recipe_records({p.class_id: p.images for p in plans}, base_records,
                                TARGETED_BASE, round_index, seed)


def uniform_records(base_records: Sequence[PromptRecord], n_classes: int, budget: int, *,
                    round_index: int, seed: int) -> list[PromptRecord]:
    """The control: `budget` more images spread uniformly over classes, base recipe unchanged.

    Each class's images cycle through its own base records (text, template, guidance,
    negative), with new seeds from (seed, "refined_shards", round, "uniform", index).
    """
    counts = uniform_allocation(n_classes, budget, round_index)
    return _base_recipe_records(dict(enumerate(counts)), base_records, UNIFORM, round_index, seed)


def uniform_plan_records(plans: Sequence[ClassPlan], settings: PlanSettings,
                         current: dict[int, ClassRecipe], base: dict[int, ClassRecipe],
                         base_records: Sequence[PromptRecord], shown_names: Sequence[str], *,
                         round_index: int, seed: int) -> list[PromptRecord]:
    """Uniform allocation (exactly `uniform_records`' counts) with the plan's recipe made
    uniform (`uniform_plan_recipes`), images made as `refined_records` makes them; seeds from
    (…, "uniform_plan", index)."""
    recipes = uniform_plan_recipes(plans, settings, current, base)
    counts = uniform_allocation(len(plans), settings.budget, round_index)
    return _recipe_records({p.class_id: (count, recipes[p.class_id])
                            for p, count in zip(plans, counts, strict=True)},
                           base_records, shown_names, UNIFORM_PLAN, round_index, seed)


def uniform_allocation(n_classes: int, budget: int, round_index: int) -> list[int]:
    """The uniform arms' split of the budget (ties rotate per round)."""
    return allocate([1.0] * n_classes, budget, tie_offset=round_index - 1)


def uniform_plan_recipes(plans: Sequence[ClassPlan], settings: PlanSettings,
                         current: dict[int, ClassRecipe], base: dict[int, ClassRecipe]
                         ) -> dict[int, ClassRecipe]:
    """The plan's recipe for every class, for an allocation that gives images to all of them.

    A class the plan gave images keeps its planned recipe (changed or, where the rule kept it,
    not). A class the plan gave no images (it was not weak, so the rule chose nothing for it)
    gets the plan's changes applied to its own `current` recipe by the rule's transformations
    (`current` and `base` as in `make_plan`): the guidance change (`lower_guidance` or
    `guidance_diversity`) that holds most of the plan's images (ties: `lower_guidance`; a class
    already at the floor stays there), and `more_templates` when a planned class has it.
    `negative_prompt` names the class one weak class is confused with and means nothing for
    another class, so it stays where the plan put it. A plan that changed no recipe leaves every
    class at `current`.
    """
    planned = {p.class_id for p in plans if p.images}
    held = {name: sum(p.images for p in plans if name in p.changes)
            for name in ("lower_guidance", "guidance_diversity", "more_templates")}
    guidance_change = max(("lower_guidance", "guidance_diversity"), key=lambda n: held[n])
    recipes = {}
    for p in plans:
        recipe = current[p.class_id]
        if p.class_id in planned:
            recipe = p.recipe
        else:
            if held[guidance_change]:
                recipe = replace(recipe, guidance=(
                    _lowered(settings, recipe) if guidance_change == "lower_guidance"
                    else _diverse_scales(settings, base[p.class_id])))
            if held["more_templates"]:
                recipe = replace(recipe, templates=tuple(settings.templates))
        recipes[p.class_id] = recipe
    return recipes


def _recipe_records(counts: dict[int, tuple[int, ClassRecipe]],
                    base_records: Sequence[PromptRecord], shown_names: Sequence[str], arm: str,
                    round_index: int, seed: int) -> list[PromptRecord]:
    """`count` images per class with `recipe`, each starting from the class's base records."""
    per_class = {}
    for class_id, (count, recipe) in counts.items():
        own = [r for r in base_records if r.class_id == class_id]
        made = []
        for i in range(count):
            record = own[i % len(own)]
            changes: dict[str, Any] = {"guidance": float(recipe.guidance[i % len(recipe.guidance)])}
            if recipe.templates and i % 2 == 1:
                template = recipe.templates[(i // 2) % len(recipe.templates)]
                changes.update(template=template,
                               text=template.format(name=shown_names[class_id]))
            if recipe.negative_class is not None:
                other = shown_names[recipe.negative_class]
                changes["negative_text"] = (f"{record.negative_text}, {other}"
                                            if record.negative_text else other)
            made.append(replace(record, **changes))
        per_class[class_id] = made
    return _interleave(per_class, arm, round_index, seed)


def _base_recipe_records(counts: dict[int, int], base_records: Sequence[PromptRecord], arm: str,
                         round_index: int, seed: int) -> list[PromptRecord]:
    """`count` images per class cycling through its own base records unchanged."""
    per_class = {}
    for class_id, count in counts.items():
        own = [r for r in base_records if r.class_id == class_id]
        per_class[class_id] = [own[i % len(own)] for i in range(count)]
    return _interleave(per_class, arm, round_index, seed)


def _interleave(per_class: dict[int, list[PromptRecord]], arm: str, round_index: int,
                seed: int) -> list[PromptRecord]:
    """Round-robin over classes; new index, key (`r1-000000`, `u1-…`) and seed per record."""
    records: list[PromptRecord] = []
    longest = max((len(v) for v in per_class.values()), default=0)
    for position in range(longest):
        for class_id in sorted(per_class):
            if position < len(per_class[class_id]):
                index = len(records)
                records.append(replace(
                    per_class[class_id][position], index=index,
                    key=f"{ARM_PREFIX[arm]}{round_index}-{index:06d}",
                    seed=derive_seed(seed, "refined_shards", round_index, arm, index)))
    return records


def partition_slice(records: Sequence[PromptRecord], key: str,
                    keys: Sequence[str]) -> list[PromptRecord]:
    """The records of one partition when `records` are cut into len(keys) near-equal parts.

    The refined shards share the synthetic shards' partition keys (one backfill covers both), so
    a round's few hundred images are cut into as many contiguous parts as there are shards.
    """
    if key not in keys:
        raise ValueError(f"partition {key!r} is not one of the shard partitions {list(keys)}")
    size = -(-len(records) // len(keys)) if records else 0
    start = keys.index(key) * size
    return list(records[start:start + size])
