"""The rounds of the closed loop, by name: round r is `refinement_plan`, `refined_shards` and one
classifier per arm of the 2×2 (`classifier_refined`, `classifier_targeted_base`,
`classifier_uniform_plan`, `classifier_uniform`; round 1 has these names, round r > 1 adds
`_round<r>`), and a round's plan directory holds each arm's prompt records."""

from __future__ import annotations

from synthfactory.ops.refinement.plan import LOOP_ARMS

# The prompt records of each arm of a round, beside its plan (refined.jsonl, …).
RECORDS = {arm: f"{arm}.jsonl" for arm in LOOP_ARMS}


def round_name(asset: str, round_index: int) -> str:
    """The asset name of one round: the plain name for round 1, `<name>_round<r>` after."""
    return asset if round_index == 1 else f"{asset}_round{round_index}"
