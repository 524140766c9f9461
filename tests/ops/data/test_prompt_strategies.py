"""Prompt strategies from the literature: class name, templates, hypernym + background tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthfactory.ops.data.prompts import expand_prompts, load_context_table, load_display_names

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _texts(strategy: str, names: tuple[str, str] = ("cat", "pickup_truck"),
           **extra: object) -> list[str]:
    records = expand_prompts(list(names), 3, ["a photo of a {name}", "a {name}"],
                             [2.0], "", 0, strategy=strategy, **extra)
    return [r.text for r in records]


def test_class_name_strategy_is_the_name_alone() -> None:
    assert _texts("class_name") == ["cat", "pickup truck"] * 3


def test_templates_strategy_cycles_templates_per_class() -> None:
    assert _texts("templates") == ["a photo of a cat", "a photo of a pickup truck", "a cat",
                                   "a pickup truck", "a photo of a cat", "a photo of a pickup truck"]


def test_hypernym_background_strategy_cycles_backgrounds() -> None:
    context = load_context_table("cifar100")
    texts = _texts("hypernym_background", ("maple_tree", "pickup_truck"), context=context)
    assert texts[0] == "maple tree, tree inside a park"
    assert texts[1].startswith("pickup truck, vehicle inside ")
    backgrounds = {text.split(" inside ")[1] for text in texts[1::2]}
    assert len(backgrounds) == 3  # three images, three different backgrounds


def test_shipped_tables_cover_cifar10_and_cifar100() -> None:
    cifar10 = load_context_table("cifar10")
    assert sorted(cifar10) == sorted(CIFAR10)
    assert cifar10["ship"].hypernym == "watercraft" and len(cifar10["ship"].backgrounds) >= 3
    cifar100 = load_context_table("cifar100")
    assert len(cifar100) == 100
    assert {"apple", "aquarium_fish", "maple_tree", "pickup_truck", "willow_tree"} <= set(cifar100)
    records = expand_prompts(CIFAR10, 2, ["{name}"], [1.0], "", 0,
                             strategy="hypernym_background", context=cifar10)
    assert records[0].text == "airplane, aircraft inside a clear blue sky"
    assert records[10].text == "airplane, aircraft inside an airport runway"


def test_a_class_missing_from_the_table_is_named() -> None:
    with pytest.raises(ValueError, match=r"no entry for classes \['unicorn'\]"):
        expand_prompts(["cat", "unicorn"], 1, ["{name}"], [1.0], "", 0,
                       strategy="hypernym_background", context=load_context_table("cifar10"))


def test_user_table_and_its_errors(tmp_path: Path) -> None:
    table = tmp_path / "table.yaml"
    table.write_text("groups:\n  pets: {hypernym: pet, backgrounds: [a sofa], classes: [cat, dog]}\n")
    assert load_context_table(str(table))["dog"].backgrounds == ("a sofa",)
    table.write_text("groups:\n  pets: {hypernym: pet, classes: [cat]}\n")
    with pytest.raises(ValueError, match="group 'pets' needs a hypernym, a non-empty backgrounds"):
        load_context_table(str(table))
    with pytest.raises(FileNotFoundError, match="neither a shipped table"):
        load_context_table("cifar1000")


def test_display_names_from_json_or_synset_lines(tmp_path: Path) -> None:
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    names = load_display_names(str(synsets))
    assert names == {"n01440764": "tench", "n01443537": "goldfish"}
    records = expand_prompts(["n01440764", "n01443537"], 1, ["a photo of a {name}"], [1.0], "", 0,
                             display_names=names)
    assert [r.text for r in records] == ["a photo of a tench", "a photo of a goldfish"]
    assert [r.class_name for r in records] == ["n01440764", "n01443537"]  # labels stay the ids
    as_json = tmp_path / "names.json"
    as_json.write_text(json.dumps({"n01440764": "tench fish"}))
    assert load_display_names(str(as_json)) == {"n01440764": "tench fish"}


def test_guidance_range_draws_per_image_on_a_grid_reproducibly() -> None:
    def draw(seed: int) -> list[float]:
        return [r.guidance for r in expand_prompts(["a", "b"], 40, ["{name}"], [1.0], "", seed,
                                                  guidance_range=[1.0, 4.0])]

    scales = draw(0)
    assert scales == draw(0) and scales != draw(1)
    assert all(1.0 <= g <= 4.0 and (g / 0.25).is_integer() for g in scales)
    assert len(set(scales)) >= 8  # diverse, not one value
