"""The training budget of each evaluation classifier: equal compute between the arms the report
compares, known before any of them trains.

Each `classifier_<arm>` trains in a step of its own, so the shared budget cannot wait for the
other arms' data: it is planned from what every arm's size is bounded by before the filter runs
— the real train split (or its few-shot subset), `prompts.images_per_class` per class for the
synthetic and filtered arms (the filter only removes), the retrieval's `per_class` and their sum
for `mixed`. The policy (`classifiers.budget`, ops/training/budget.py) then gives every compared
arm the steps of the largest one's epoch schedule (mixed on the shipped params: 15 epochs × 16
batches of 128 = 240 steps), so no arm trains less than its own epochs would give it, and a
difference between two arms is their data's. The scaling curve's subsets and the closed loop's
arms train the same steps: a curve of accuracy against data, not against compute.

The distilled arm follows the dataset-distillation evaluation protocol instead (fixed epochs on
the distilled images, ops/distillation/protocol.py): its row says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthfactory.ops.data.real_images import read_training_images
from synthfactory.ops.training.budget import Budget, training_budgets

# Arms whose published protocol fixes epochs: they keep their own schedule, and the report says
# so beside their row.
EPOCH_PROTOCOLS = {"distilled": "the dataset-distillation evaluation protocol"}


@dataclass(frozen=True)
class PlannedSizes:
    """What bounds each arm's size before it is made (see the module docstring)."""

    n_real_train: int
    n_classes: int
    synthetic_per_class: int
    retrieved_per_class: int

    def of(self, arm: str) -> int | None:
        """The planned training images of `arm` (None: not an equal-compute arm)."""
        synthetic = self.n_classes * self.synthetic_per_class
        return {"real": self.n_real_train,
                "retrieved": self.n_classes * self.retrieved_per_class,
                "synthetic": synthetic, "filtered": synthetic,
                "mixed": self.n_real_train + synthetic}.get(arm)


def planned_sizes(real_dir: Path, images_per_class: int,
                  retrieved_per_class: int | None) -> PlannedSizes:
    """The sizes that plan the budget, from the real images on disk and the prompts' count."""
    _, labels, _ = read_training_images(real_dir)
    n_classes = len(set(labels.tolist()))
    return PlannedSizes(n_real_train=len(labels), n_classes=max(n_classes, 1),
                        synthetic_per_class=images_per_class,
                        retrieved_per_class=retrieved_per_class or images_per_class)


def compared_budgets(arms: Sequence[str], sizes: PlannedSizes, *, policy: str, epochs: int,
                     min_steps: int, batch_size: int) -> dict[str, Budget]:
    """The Budget of every configured arm that trains a classifier of its own, and `reference`:
    the shared budget that the scaling curve and the closed loop's arms train with."""
    planned = {arm: size for arm in arms if (size := sizes.of(arm)) is not None}
    protocols = {arm: why for arm, why in EPOCH_PROTOCOLS.items() if arm in arms}
    # The protocol arms' own sizes are not known before distillation: they stand in with one
    # batch, which budget.py only uses to word their reason (the DD protocol trains them).
    planned.update({arm: batch_size for arm in protocols})
    if not set(planned) - set(protocols):  # no equal-compute arm configured: real alone
        planned["real"] = sizes.n_real_train
    budgets = training_budgets(planned, policy=policy, epochs=epochs, min_steps=min_steps,
                               batch_size=batch_size, epoch_protocol=protocols)
    equal = [budget for arm, budget in budgets.items() if arm not in protocols]
    budgets["reference"] = max(equal, key=lambda budget: budget.steps)
    return budgets
