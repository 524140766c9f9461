"""The section of the closed loop: `refinement` (weak-class refinement rounds and their control)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from synthfactory.params.base import Section

# The recipe changes a plan may apply to a weak class (`more_images`, the budget itself, always
# applies). Their meaning is in ops/refinement/plan.py. (A list of Literal is not a Dagster
# config type, so the names are checked by a validator.)
RECIPE_CHANGES = ("lower_guidance", "guidance_diversity", "more_templates", "negative_prompt")


class RefinementParams(Section):
    """Weak-class refinement: `rounds` of plan → extra shards → classifiers, `budget` images each.

    Each round reads the synthetic arm's (round 1) or the previous refined arm's per-class
    accuracy on the *validation* split, against the real arm's, plus the filter's per-class pass
    rates and the confusion pairs; it spends `budget` extra images on the classes that trail by
    more than `min_gap`, with recipe changes from `recipes`. The control arm spends the same
    budget uniformly over classes with the base recipe. 0 rounds: the loop is not in the graph.
    """

    rounds: int = Field(default=0, ge=0, le=20)
    budget: int = Field(default=300, gt=0)
    recipes: list[str] = list(RECIPE_CHANGES)
    # A class is weak when its validation accuracy trails the real arm's by more than this.
    min_gap: float = Field(default=0.02, ge=0.0, le=1.0)
    # Judge pass rate at or above which a weak class's images are recognisable but alike
    # (lower guidance), and below which the generator often misses the class (keep guidance).
    pass_rate_high: float = Field(default=0.9, ge=0.0, le=1.0)
    pass_rate_low: float = Field(default=0.5, ge=0.0, le=1.0)
    # Share of a class's validation errors going to one other class that makes a confusion pair.
    confusion_share: float = Field(default=0.3, gt=0.0, le=1.0)
    guidance_factor: float = Field(default=0.5, gt=0.0, le=1.0)
    min_guidance: float = Field(default=1.0, ge=0.0)
    diversity_levels: int = Field(default=3, ge=2)
    templates: list[str] = ["a photo of a {name}", "a close-up photo of a {name}",
                            "a {name} in its natural setting", "a cropped photo of a {name}"]

    @field_validator("recipes")
    @classmethod
    def _known_recipes(cls, recipes: list[str]) -> list[str]:
        unknown = [name for name in recipes if name not in RECIPE_CHANGES]
        if unknown:
            raise ValueError(f"refinement.recipes {unknown} are not recipe changes; they are "
                             f"{', '.join(RECIPE_CHANGES)} (more images always applies)")
        return recipes

    @model_validator(mode="after")
    def _consistent(self) -> RefinementParams:
        if self.pass_rate_low > self.pass_rate_high:
            raise ValueError(f"refinement.pass_rate_low {self.pass_rate_low} is above "
                             f"pass_rate_high {self.pass_rate_high}: low must be <= high")
        bad = [t for t in self.templates if "{name}" not in t]
        if bad:
            raise ValueError(f"refinement.templates entry {bad[0]!r} has no '{{name}}' placeholder")
        return self
