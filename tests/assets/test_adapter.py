"""`generator.adapt: lora` in the graph: the adapter is trained on the real images and the
shards are generated with it (tiny Stable Diffusion built from config, through Dagster)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.shards import finished_shards, read_shard_info
from synthfactory.params import ParamsError, parse_params
from tests.support import tiny_params, write_labelled_webdataset

CLASSES = ["red_apple", "green_leaf"]


def _params(root: Path, sd: Path, **adapter: object) -> dict:
    shards = write_labelled_webdataset(root / "user-shards", CLASSES, 8, size=16)
    params = tiny_params(
        root, real_images={"source": "webdataset", "root": str(shards), "resolution": 16},
        prompts={"templates": ["a photo of a {name}"], "images_per_class": 2, "guidance": [2.0]},
        generator={"backend": "diffusers", "model": str(sd), "local_files_only": True,
                   "adapt": "lora", "adapter": {"rank": 2, "steps": 4, "batch_size": 2,
                                                 "learning_rate": 1e-3, **adapter}},
        synthetic_shards={"shard_size": 4, "steps": 2, "batch_size": 4, "height": 16,
                          "width": 16},
        # Two images per class leave one after the filter's top half: distil one per class.
        distilled_set={"methods": ["dm"], "ipcs": [1], "eval_models": 1})
    params["generator"].pop("ddpm")
    return params


def test_shards_are_generated_with_the_trained_adapter(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """Guards the wiring: the shard sidecars carry the adapter's digest (a shard generated
    without it would carry the bare pipeline's) and the adapter is safetensors with a digest."""
    defs = build_definitions(parse_params(_params(tmp_path, tiny_sd_dir)))
    shards_def = defs.get_assets_def("synthetic_shards")
    assert dg.AssetKey("generator_adapter") in shards_def.dependency_keys
    keys = shards_def.partitions_def.get_partition_keys()
    wanted = ["real_images", "prompts", "generator", "generator_adapter", "synthetic_shards"]
    result = dg.materialize(list(defs.assets), resources=defs.resources,
                            selection=dg.AssetSelection.assets(*wanted), tags={
                                "dagster/asset_partition_range_start": keys[0],
                                "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    adapter = json.loads((tmp_path / "data" / "generator_adapter" / "adapter.json").read_text())
    assert adapter["weights"].endswith(".safetensors") and len(adapter["digest"]) == 64
    assert set(adapter["heldout_loss"]) == {"before", "after"}
    base = json.loads((tmp_path / "data" / "generator" / "generator.json").read_text())
    assert adapter["base_digest"] == base["digest"]
    for shard in finished_shards(tmp_path / "data" / "synthetic_shards"):
        digest = read_shard_info(shard).extra["generator_digest"]
        assert digest == f"{base['digest']}+{adapter['digest']}"
    assert not (tmp_path / "data" / ".checkpoints" / "generator_adapter").exists()


@pytest.mark.parametrize(("section", "message"), [
    ({"generator": {"adapt": "lora"}}, "needs generator.backend: diffusers"),
    ({"refinement": {"recipes": ["more_guidance"]}}, "are not recipe changes"),
    ({"refinement": {"pass_rate_low": 0.95}}, "low must be <= high"),
    ({"refinement": {"rounds": -1}}, "refinement.rounds"),
])
def test_bad_loop_params_name_the_key(tmp_path: Path, section: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_params(tiny_params(tmp_path, **section))
