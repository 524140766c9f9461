"""The shipped pretrained presets parse and build the run config without loading any weights."""

from __future__ import annotations

from pathlib import Path

import yaml

from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params
from tests.support import PROJECT_ROOT, class_images, png_bytes

ROOT = PROJECT_ROOT
SYNSETS = ["n01440764", "n01443537", "n01484850"]


def _preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / name).read_text())


def _partitions(raw: dict) -> list[str]:
    defs = build_definitions(parse_params(raw, source="preset"))
    return defs.get_assets_def("synthetic_shards").partitions_def.get_partition_keys()


def test_cifar10_sd_turbo_builds_without_touching_models_or_images() -> None:
    raw = _preset("cifar10-sd-turbo.yaml")
    config = parse_params(raw, source="cifar10-sd-turbo.yaml")
    params = config.params
    assert (params.generator.backend, params.generator.model) == ("diffusers",
                                                                  "stabilityai/sd-turbo")
    assert params.generator.local_files_only and params.judge.local_files_only
    assert params.judge.backend == "clip" and params.filtered_set.clip_score == 0.2
    assert params.prompts.strategy == "hypernym_background" and params.real_images.resolution == 32
    assert (params.synthetic_shards.height, params.synthetic_shards.steps) == (512, 1)
    assert config.runtime.dtype == "float16"
    assert params.classifiers.architecture == "resnet18" and "zero_shot" in params.classifiers.arms
    # 10 classes × 5000 images / 1000 per shard: the class list is in the preset, so nothing
    # is read from the (absent) image folders and no model is opened.
    assert len(_partitions(raw)) == 50


def test_imagenet100_sd15_builds_on_a_users_folders(tmp_path: Path) -> None:
    raw = _preset("imagenet100-sd15.yaml")
    for split in ("train", "val"):
        for synset in SYNSETS:
            folder = tmp_path / split / synset
            folder.mkdir(parents=True)
            (folder / "a.png").write_bytes(png_bytes(class_images(0, 1, 8)[0]))
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\nn01484850 great white "
                       "shark, white shark\n")
    raw["real_images"].update(root=str(tmp_path / "train"), test_root=str(tmp_path / "val"))
    raw["prompts"]["display_names"] = str(mapping)
    params = parse_params(raw, source="imagenet100-sd15.yaml").params
    assert params.generator.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert params.synthetic_shards.scheduler == "dpm" and params.synthetic_shards.steps == 25
    assert params.distilled_set.dm.features == "judge"
    assert params.prompts.guidance_range == [1.5, 5.0]
    assert params.classifiers.architecture == "resnet50" and params.classifiers.batch_size is None
    # 3 classes × 1300 images / 1000 per shard.
    assert len(_partitions(raw)) == 4
