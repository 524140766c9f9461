"""Equal compute between compared arms: the optimizer steps (and images seen) of every arm.

Today each arm trains `max(min_steps, epochs × batches per pass)` steps (train.py), so a larger
arm trains longer: mixed (2086 images) got 240 steps, real (1132) 150, and the real arm at 240
steps matches mixed. A comparison then credits the data with what the compute did. Policies:

- `equal_steps` (the default): every compared arm trains the same number of steps,
  `max(min_steps, epochs × batches per pass of n_ref)` with n_ref the LARGEST compared arm. The
  largest arm thus trains exactly the schedule it had under `epochs` and no arm trains less than
  its own epoch schedule would give it: a smaller arm gets more passes over its data, never
  fewer steps. (With the real arm as the reference, mixed — larger than real — would get fewer
  steps than its epochs, and a worse mixed could be under-training, not worse data.)
- `epochs`: steps follow each arm's size, as train.py computes them — for arms whose published
  protocol fixes epochs (the dataset-distillation evaluation trains its fixed epochs on the
  distilled set); the report labels such rows. Pass them as `epoch_protocol` beside an
  `equal_steps` policy, or choose `epochs` for all arms (the old behaviour).

A pass is `n // batch` steps in memory (train.py drops each permutation's partial batch) and
`ceil(n / batch)` for a streamed source; the batch is capped at the arm's size, as train.py does.
Images seen = steps × that batch: equal steps give equal images seen except for an arm smaller
than one batch, which the reason says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

POLICIES = ("equal_steps", "epochs")


@dataclass(frozen=True)
class Budget:
    """One arm's training budget and the sentence the report prints about it."""

    policy: str
    steps: int
    images_seen: int
    batch_size: int
    reason: str


def steps_per_pass(n_images: int, batch_size: int, streamed: bool = False) -> int:
    """Optimizer steps in one pass over n images, as train.py counts them (≥ 1)."""
    batch = min(batch_size, n_images)
    return max(1, math.ceil(n_images / batch) if streamed else n_images // batch)


def training_budgets(arm_sizes: Mapping[str, int], *, policy: str = "equal_steps",
                     epochs: int, min_steps: int, batch_size: int,
                     epoch_protocol: Mapping[str, str] | None = None,
                     streamed: bool = False) -> dict[str, Budget]:
    """The Budget of every arm the report compares.

    `arm_sizes`: training images per arm. `epoch_protocol`: arm → the published protocol that
    fixes its epochs (e.g. {"distilled": "the dataset-distillation evaluation"}); those arms
    follow `epochs` whatever the policy and are left out of the equal-steps reference.
    """
    if policy not in POLICIES:
        raise ValueError(f"classifiers.budget {policy!r} must be one of {list(POLICIES)}")
    if not arm_sizes:
        raise ValueError("training_budgets of no arms: give each compared arm's image count")
    for name, value in (("epochs", epochs), ("min_steps", min_steps),
                        ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} {value} must be a positive integer")
    bad = {arm: n for arm, n in arm_sizes.items() if n < 1}
    if bad:
        raise ValueError(f"arms with no training images {bad}: every compared arm needs ≥ 1")
    protocols = dict(epoch_protocol or {})
    unknown = sorted(set(protocols) - set(arm_sizes))
    if unknown:
        raise ValueError(f"epoch_protocol names arms {unknown} that are not compared "
                         f"({sorted(arm_sizes)})")

    def own_schedule(n: int, why: str) -> Budget:
        per_pass = steps_per_pass(n, batch_size, streamed)
        steps = max(min_steps, epochs * per_pass)
        batch = min(batch_size, n)
        rule = (f"min_steps {min_steps}" if steps == min_steps and epochs * per_pass < min_steps
                else f"{epochs} epochs × {per_pass} batches of {batch} over {n} images")
        return Budget("epochs", steps, steps * batch, batch,
                      f"{steps} steps ({rule}): {why}")

    budgets: dict[str, Budget] = {}
    for arm, protocol in protocols.items():
        budgets[arm] = own_schedule(arm_sizes[arm], f"{protocol} fixes epochs, so its "
                                    "steps follow its size rather than the compared arms'")
    equal = {arm: n for arm, n in arm_sizes.items() if arm not in protocols}
    if policy == "epochs":
        for arm, n in equal.items():
            budgets[arm] = own_schedule(n, "steps follow each arm's size (policy epochs), "
                                        "so compared arms train different numbers of steps")
    elif equal:
        reference = max(equal, key=lambda arm: (equal[arm], arm))
        n_ref = equal[reference]
        per_pass = steps_per_pass(n_ref, batch_size, streamed)
        steps = max(min_steps, epochs * per_pass)
        rule = (f"min_steps {min_steps}" if epochs * per_pass < min_steps else
                f"{epochs} epochs × {per_pass} batches of {min(batch_size, n_ref)}")
        for arm, n in equal.items():
            batch = min(batch_size, n)
            note = (f"; {arm} has {n} images, fewer than one batch of {batch_size}, so each step "
                    f"sees {batch}" if batch < batch_size else "")
            budgets[arm] = Budget(
                "equal_steps", steps, steps * batch, batch,
                f"{steps} steps, the same for every compared arm ({rule} of the largest, "
                f"{reference}, {n_ref} images), so that no arm trains less than its own epochs "
                f"would give it and a difference is the data's, not the compute's ({arm}: "
                f"{steps * batch / n:.1f} passes over its {n} images{note})")
    return {arm: budgets[arm] for arm in arm_sizes}
