"""The refinement plan: where the budget goes, which recipe changes, and the records it makes."""

from __future__ import annotations

import numpy as np
import pytest

from synthfactory.ops.data.prompts import expand_prompts
from synthfactory.ops.refinement.plan import (ClassRecipe, PlanSettings, allocate,
                                              base_recipes, class_evidence, make_plan,
                                              partition_slice, refined_records,
                                              targeted_base_records, uniform_plan_records,
                                              uniform_plan_recipes, uniform_records)

NAMES = ["zero", "one", "two", "three"]
BASE = expand_prompts(NAMES, 6, ["a digit {name}"], [2.0], "", 0)


def _evidence(val: list[float], pass_rates: list[float], confused: dict[int, int] | None = None):
    """Per-class evidence; the real arm is perfect, errors of class c go to `confused[c]`."""
    confusion = np.zeros((4, 4), np.int64)
    for c, accuracy in enumerate(val):
        confusion[c, c] = round(accuracy * 20)
        confusion[c, (confused or {}).get(c, (c + 1) % 4)] += 20 - round(accuracy * 20)
    return class_evidence(NAMES, val, [1.0] * 4, confusion,
                          dict(zip(NAMES, pass_rates, strict=True)))


def _plan(evidence, **settings):
    base = base_recipes(BASE, 4)
    return make_plan(evidence, PlanSettings(budget=100, **settings), base, base)


def test_the_budget_goes_to_weak_classes_in_proportion_to_their_gap() -> None:
    """Guards the targeting: a uniform split (what the control does) fails it."""
    plans = _plan(_evidence([0.6, 0.9, 1.0, 0.99], [0.98] * 4))
    assert [p.images for p in plans] == [80, 20, 0, 0]  # gaps 0.4, 0.1; 0 and 0.01 not weak
    assert sum(p.images for p in plans) == 100
    assert plans[2].changes == [] and "no extra images" in plans[2].why


def test_allocation_is_exact_and_rotates_ties() -> None:
    assert allocate([1, 1, 1], 10) == [4, 3, 3]
    assert allocate([1, 1, 1], 10, tie_offset=1) == [3, 4, 3]
    assert sum(allocate([0.3, 0.2, 0.0, 0.11], 301)) == 301
    with pytest.raises(ValueError):
        allocate([0, 0], 5)


def test_recognisable_but_failing_classes_get_lower_guidance_and_missed_ones_keep_it() -> None:
    """The rule: a high judge pass rate means alike images (lower guidance); a low one means the
    generator misses the class (lowering would make it worse)."""
    plans = _plan(_evidence([0.6, 0.6, 0.6, 1.0], [0.98, 0.7, 0.2, 1.0]))
    assert plans[0].changes == ["more_images", "lower_guidance"]
    assert plans[0].recipe.guidance == (1.0,)
    assert plans[1].changes == ["more_images", "guidance_diversity"]
    assert plans[1].recipe.guidance == (1.0, 1.5, 2.0)
    assert plans[2].changes == ["more_images"] and plans[2].recipe.guidance == (2.0,)
    assert "lower guidance would make that worse" in plans[2].why
    # The embedded DDPM has no text: no template or negative-prompt change without a text backend.
    assert not any(c in p.changes for p in plans for c in ("more_templates", "negative_prompt"))


def test_text_backends_get_templates_and_a_negative_prompt_naming_the_confused_class() -> None:
    evidence = _evidence([0.5, 1.0, 1.0, 1.0], [0.3, 1.0, 1.0, 1.0], confused={0: 3})
    plans = _plan(evidence, text_backend=True, templates=("a photo of {name}",))
    assert plans[0].changes == ["more_images", "more_templates", "negative_prompt"]
    assert plans[0].recipe.negative_class == 3
    records = refined_records(plans, BASE, NAMES, round_index=1, seed=0)
    assert len(records) == 100 and {r.class_id for r in records} == {0}
    assert {r.negative_text for r in records} == {"three"}
    assert {r.text for r in records} == {"a digit zero", "a photo of zero"}
    # Disabled changes are not applied.
    plans = _plan(evidence, text_backend=True, recipes=("lower_guidance",), templates=("x {name}",))
    assert plans[0].changes == ["more_images"]


def test_lower_guidance_never_raises_a_scale_and_escalates_at_the_floor() -> None:
    evidence = _evidence([0.5, 1.0, 1.0, 1.0], [0.99, 1.0, 1.0, 1.0])
    zero = {c: ClassRecipe(guidance=(0.0,)) for c in range(4)}
    plans = make_plan(evidence, PlanSettings(budget=10, recipes=("lower_guidance",)), zero, zero)
    assert plans[0].recipe.guidance == (0.0,)
    floor = {c: ClassRecipe(guidance=(1.0,)) for c in range(4)}
    plans = make_plan(evidence, PlanSettings(budget=10), floor, base_recipes(BASE, 4))
    assert plans[0].changes == ["more_images", "guidance_diversity"]


def test_no_weak_class_spreads_the_budget_uniformly() -> None:
    plans = _plan(_evidence([1.0, 0.99, 1.0, 1.0], [1.0] * 4))
    assert [p.images for p in plans] == [25, 25, 25, 25]
    assert all(p.changes == ["more_images"] for p in plans)


def test_records_are_new_images_balanced_and_sliced_without_loss() -> None:
    plans = _plan(_evidence([0.6, 0.9, 1.0, 0.99], [0.98] * 4))
    refined = refined_records(plans, BASE, NAMES, round_index=2, seed=0)
    uniform = uniform_records(BASE, 4, 100, round_index=2, seed=0)
    base_seeds = {r.seed for r in BASE}
    for records, prefix in ((refined, "r2-"), (uniform, "u2-")):
        assert len({r.key for r in records}) == 100
        assert all(r.key.startswith(prefix) for r in records)
        assert not base_seeds & {r.seed for r in records}
        keys = ["00000", "00001", "00002"]
        slices = [partition_slice(records, k, keys) for k in keys]
        assert [r.key for s in slices for r in s] == [r.key for r in records]
    assert np.bincount([r.class_id for r in refined], minlength=4).tolist() == [80, 20, 0, 0]
    assert {r.guidance for r in refined} == {1.0}
    assert np.bincount([r.class_id for r in uniform]).tolist() == [25, 25, 25, 25]
    assert {r.guidance for r in uniform} == {2.0} and refined[0].class_id == 0
    assert refined_records(plans, BASE, NAMES, round_index=2, seed=0) == refined


def _four_arms(plans: list, settings: PlanSettings | None = None,
               round_index: int = 1) -> dict[str, list]:
    """The four arms' prompt records of a round (budget 100 unless `settings` say otherwise)."""
    settings = settings or PlanSettings(budget=100)
    base = base_recipes(BASE, 4)
    at = {"round_index": round_index, "seed": 0}
    return {"refined": refined_records(plans, BASE, NAMES, **at),
            "targeted_base": targeted_base_records(plans, BASE, **at),
            "uniform_plan": uniform_plan_records(plans, settings, base, base, BASE, NAMES, **at),
            "uniform": uniform_records(BASE, 4, settings.budget, **at)}


def _count(records) -> list[int]:
    return np.bincount([r.class_id for r in records], minlength=4).tolist()


def test_the_two_by_two_changes_one_thing_per_pair() -> None:
    """Guards "a control changes one thing": targeted arms share the plan's allocation, uniform
    arms the uniform one; plan-recipe arms make every image at the plan's guidance (lowered 2 → 1
    here), base-recipe arms at the base's; every arm makes the budget, with its own seeds."""
    plans = _plan(_evidence([0.6, 0.9, 1.0, 0.99], [0.98] * 4))
    arms = _four_arms(plans)
    assert _count(arms["refined"]) == _count(arms["targeted_base"]) == [80, 20, 0, 0]
    assert _count(arms["uniform_plan"]) == _count(arms["uniform"]) == [25, 25, 25, 25]
    assert {r.guidance for r in arms["refined"]} == {r.guidance for r in arms["uniform_plan"]} \
        == {1.0}
    assert {r.guidance for r in arms["targeted_base"]} == {r.guidance for r in arms["uniform"]} \
        == {2.0}
    keys = [r.key for records in arms.values() for r in records]
    seeds = [r.seed for records in arms.values() for r in records]
    assert len(set(keys)) == len(set(seeds)) == 400  # each arm's own keys and seeds
    assert [r.key[:3] for r in (a[0] for a in arms.values())] == ["r1-", "tb1", "up1", "u1-"]
    assert not {r.seed for r in BASE} & set(seeds)
    assert _four_arms(plans) == arms  # deterministic


def test_uniform_plan_keeps_planned_recipes_and_extends_the_plans_change_to_other_classes() -> None:
    # Class 0 lowered (pass rate high), class 1 spread (middle), class 2 kept (generator misses
    # it), class 3 not weak. lower_guidance holds most images: class 3 gets it, class 2 keeps
    # its planned (unchanged) recipe, as the plan decided for it.
    evidence = _evidence([0.5, 0.8, 0.8, 1.0], [0.98, 0.7, 0.2, 1.0])
    plans = _plan(evidence)
    assert [p.images for p in plans] == [56, 22, 22, 0]
    base = base_recipes(BASE, 4)
    settings = PlanSettings(budget=100)
    recipes = uniform_plan_recipes(plans, settings, base, base)
    assert [recipes[c].guidance for c in range(4)] == [(1.0,), (1.0, 1.5, 2.0), (2.0,), (1.0,)]
    # A guidance_diversity majority spreads the unplanned class's scales instead.
    plans = _plan(_evidence([0.6, 0.5, 1.0, 1.0], [0.98, 0.7, 1.0, 1.0]))
    assert [p.images for p in plans] == [44, 56, 0, 0]
    recipes = uniform_plan_recipes(plans, settings, base, base)
    assert recipes[2].guidance == recipes[3].guidance == (1.0, 1.5, 2.0)
    # Text changes: templates extend to every class, a negative prompt stays where it was put.
    evidence = _evidence([0.5, 1.0, 1.0, 1.0], [0.3, 1.0, 1.0, 1.0], confused={0: 3})
    text = PlanSettings(budget=100, text_backend=True, templates=("a photo of {name}",))
    plans = make_plan(evidence, text, base, base)
    recipes = uniform_plan_recipes(plans, text, base, base)
    assert recipes[0].negative_class == 3 and recipes[1].negative_class is None
    assert all(recipes[c].templates == ("a photo of {name}",) for c in range(4))
    assert all(recipes[c].guidance == (2.0,) for c in range(4))  # the plan kept guidance
    records = uniform_plan_records(plans, text, base, base, BASE, NAMES, round_index=1, seed=0)
    assert {r.text for r in records if r.class_id == 2} == {"a digit two", "a photo of two"}


def test_a_plan_without_recipe_changes_makes_uniform_plan_the_base_recipe() -> None:
    plans = _plan(_evidence([1.0, 0.99, 1.0, 1.0], [1.0] * 4))  # nobody weak
    arms = _four_arms(plans)
    assert {r.guidance for records in arms.values() for r in records} == {2.0}
    assert [(r.class_id, r.text) for r in arms["uniform_plan"]] == \
        [(r.class_id, r.text) for r in arms["uniform"]]
