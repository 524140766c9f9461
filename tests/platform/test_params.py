"""params.yaml validation: the shipped file loads; bad values fail with a message naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synthfactory.params import ParamsError, load_params, parse_params
from tests.support import PROJECT_ROOT

ROOT = PROJECT_ROOT


def test_the_shipped_params_file_loads_with_the_design_defaults() -> None:
    config = load_params(ROOT / "params.yaml")
    assert config.store.root == "data"
    assert config.runtime.seed == 0 and config.runtime.device == "auto"
    assert config.params.real_images.source == "digits"
    assert config.params.real_images.resolution == 8
    assert config.params.prompts.images_per_class >= 100
    assert config.params.synthetic_shards.shard_size == 250


@pytest.mark.parametrize("raw, message", [
    ({"prompts": {"images_per_clas": 3}}, "prompts.images_per_clas = 3: unknown key"),
    ({"prompt": {}}, "prompt: unknown key"),
    ({"prompts": {"images_per_class": 0}}, "prompts.images_per_class = 0: Input should be greater"),
    ({"prompts": {"images_per_class": "many"}}, "prompts.images_per_class = 'many'"),
    ({"prompts": {"templates": ["a photo"]}}, "no '{name}' placeholder"),
    ({"prompts": {"guidance": [-1.0]}}, "prompts.guidance"),
    ({"real_images": {"source": "mnist"}}, "real_images.source = 'mnist'"),
    ({"real_images": {"source": "imagefolder"}}, "needs real_images.root"),
    ({"real_images": {"channels": 2}}, "must be 1 (grey), 3 (RGB)"),
    ({"generator": {"backend": "gan"}}, "generator.backend = 'gan'"),
    ({"generator": {"ddpm": {"widths": [12]}}}, "multiples of 8"),
    ({"synthetic_shards": {"scheduler": "heun"}}, "synthetic_shards.scheduler = 'heun'"),
    ({"store": {"path": "x"}}, "store.path = 'x': unknown key"),
    ({"runtime": {"device": "tpu"}}, "runtime.device = 'tpu'"),
    ({"seed": -1}, "seed = -1"),
    ({"runtime": {"seed": 3}}, "runtime.seed: the seed is the top-level key"),
    ({"classifiers": {"architecture": "alexnet"}}, "classifiers.architecture = 'alexnet'"),
    ({"classifiers": {"precision": "fp16"}}, "classifiers.precision = 'fp16'"),
    ({"classifiers": {"label_smoothing": 1.0}}, "classifiers.label_smoothing = 1.0"),
    ({"eval_report": {"scaling": [0.0, 1.0]}}, "eval_report.scaling [0.0]: fractions"),
    ({"eval_report": {"scaling": [0.5]}}, "two or more different fractions"),
])
def test_bad_values_name_the_key_and_the_rule(raw: dict, message: str) -> None:
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("prompts: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_section_digests_change_only_with_their_section(tmp_path: Path) -> None:
    base = parse_params({}).params
    changed = parse_params({"synthetic_shards": {"steps": 50}}).params
    assert base.digest("prompts") == changed.digest("prompts")
    assert base.digest("synthetic_shards") != changed.digest("synthetic_shards")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"synthetic_shards": {"steps": 50}}))
    assert load_params(path).params.digest("synthetic_shards") == changed.digest("synthetic_shards")


def test_shipped_presets_parse() -> None:
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert presets
    for preset in presets:
        config = load_params(preset)
        assert config.store.root != "data", f"{preset.name} must not overwrite the default store"
    # The guidance mix is the default; the single scale 2 is kept as the comparison.
    assert load_params(ROOT / "params.yaml").params.prompts.guidance == [1.0, 2.0, 3.0]
    assert load_params(ROOT / "configs" / "digits-guidance2.yaml").params.prompts.guidance == [
        2.0]
    few_shot = load_params(ROOT / "configs" / "digits-few-shot.yaml").params
    assert few_shot.real_images.few_shot == 10 and "mixed" in few_shot.classifiers.arms


@pytest.mark.parametrize("raw, message", [
    ({"classifiers": {"arms": ["real", "retreived"]}},
     "classifiers.arms ['retreived'] are not arms; choose from real, zero_shot, retrieved"),
    ({"classifiers": {"arms": ["real", "real"]}}, "lists ['real'] more than once"),
    ({"classifiers": {"arms": []}}, "classifiers.arms is empty"),
    ({"classifiers": {"arms": ["real", "zero_shot"]}}, "zero_shot, which needs judge.backend: clip"),
    ({"eval_report": {"accuracy_floor": {"mixd": 0.9}}},
     "eval_report.accuracy_floor names ['mixd'], which are not in classifiers.arms"),
])
def test_arm_choices_are_checked_against_the_registry(raw: dict, message: str) -> None:
    """Arm names are checked when the definitions are built (params import nothing from ops)."""
    from synthfactory.definitions import build_definitions

    with pytest.raises(ValueError) as error:
        build_definitions(parse_params(raw))
    assert message in str(error.value)


@pytest.mark.parametrize("raw, message", [
    ({"retrieval": {"pool": "photos/", "labelled_per_class": 5}},
     "labelled_per_class 5 applies to the train-split pool only"),
    ({"real_images": {"few_shot": 10}, "retrieval": {"labelled_per_class": 20}},
     "labelled_per_class 20 differs from real_images.few_shot 10"),
    ({"retrieval": {"embedding": "judge"}}, "embedding"),
])
def test_the_retrieval_ranking_cannot_be_set_to_learn_from_the_pool(raw: dict,
                                                                    message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_the_labelled_part_defaults_to_ten_or_the_few_shots() -> None:
    assert parse_params({}).params.retrieval.labelled(None) == 10
    few_shot = parse_params({"real_images": {"few_shot": 4}}).params
    assert few_shot.retrieval.labelled(few_shot.real_images.few_shot) == 4


@pytest.mark.parametrize("raw, width", [
    # the shipped choice: both null, the resolution decides (64 below 32 px, 128 from 32 px)
    ({"classifiers": {"width": None}, "distilled_set": {"eval": {"width": None}}}, 64),
    ({"real_images": {"resolution": 32}, "classifiers": {"width": None},
      "distilled_set": {"eval": {"width": None}}}, 128),
    # null distillation width: the classifiers' own
    ({"classifiers": {"width": 96}, "distilled_set": {"eval": {"width": None}}}, 96),
    # a set width is kept (the model's default is the reference's 128)
    ({"classifiers": {"width": None}}, 128),
    ({"classifiers": {"width": 96}, "distilled_set": {"eval": {"width": 32}}}, 32),
])
def test_the_distillation_width_follows_the_classifiers_when_unset(raw: dict, width: int) -> None:
    """The distilled arm trains the same network as the arms it is compared with, unless the
    params fix its width (the distillation configs' reference 128)."""
    from synthfactory.asset_inputs import distillation_width

    assert distillation_width(parse_params(raw).params) == width


def test_the_shipped_params_train_every_arm_at_the_width_the_resolution_gives() -> None:
    from synthfactory.asset_inputs import distillation_width

    shipped = load_params(ROOT / "params.yaml").params
    assert shipped.classifiers.width is None and shipped.distilled_set.eval.width is None
    assert distillation_width(shipped) == 64  # the digits' 8 px


def test_the_distillation_vocabulary_of_the_params_is_the_ops_one() -> None:
    """params import nothing from ops, so `distilled_set`'s methods and sources are spelled
    twice; a method added to one list and not the other would be refused, or accepted and then
    fail deep in a run."""
    from synthfactory.ops.distillation import cells
    from synthfactory.params import distillation

    assert distillation.METHODS == cells.METHODS
    assert distillation.SOURCES == cells.SOURCES
