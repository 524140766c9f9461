"""The rounds of the closed loop, by name: round r is four assets, `refinement_plan`,
`refined_shards`, `classifier_refined` and `classifier_uniform` (round 1 has these names; round
r > 1 adds `_round<r>`), and a round's plan directory holds each arm's prompt records."""

from __future__ import annotations

from synthfactory.ops.refinement.plan import REFINED, UNIFORM

# The prompt records of each arm of a round, beside its plan.
RECORDS = {REFINED: "refined.jsonl", UNIFORM: "uniform.jsonl"}


def round_name(asset: str, round_index: int) -> str:
    """The asset name of one round: the plain name for round 1, `<name>_round<r>` after."""
    return asset if round_index == 1 else f"{asset}_round{round_index}"
