"""The closed loop's presets parse and build their graphs without loading weights or images."""

from __future__ import annotations

import yaml

from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params
from tests.support import PROJECT_ROOT

# One round: the plan, the extra shards, one classifier per arm of the 2×2 (allocation × recipe).
LOOP_ASSETS = {"refinement_plan", "refined_shards", "classifier_refined",
               "classifier_targeted_base", "classifier_uniform_plan", "classifier_uniform"}


def _graph(name: str) -> tuple[object, set[str]]:
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / name).read_text())
    config = parse_params(raw, source=name)
    defs = build_definitions(config)
    return config, {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_digits_guidance2_is_the_old_default_with_one_round_of_300() -> None:
    config, assets = _graph("digits-guidance2.yaml")
    params = config.params
    assert params.prompts.guidance == [2.0] and params.generator.backend == "ddpm"
    assert (params.refinement.rounds, params.refinement.budget) == (1, 300)
    assert LOOP_ASSETS <= assets and "generator_adapter" not in assets
    assert not any(name.endswith("_round2") for name in assets)


def test_cifar10_lora_preset_adapts_the_generator_and_refines_once() -> None:
    config, assets = _graph("cifar10-sd-turbo-lora.yaml")
    params = config.params
    assert params.generator.adapt == "lora" and params.generator.adapter.text_encoder
    assert params.refinement.rounds == 1 and params.refinement.recipes == ["more_templates"]
    assert {"generator_adapter", *LOOP_ASSETS} <= assets


def test_the_default_graph_has_no_loop() -> None:
    _, assets = _graph("../params.yaml")
    assert not assets & (LOOP_ASSETS | {"generator_adapter"})
