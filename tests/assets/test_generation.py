"""The first half of the graph through real Dagster materializations on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import webdataset as wds

from synthfactory.definitions import build_definitions
from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.dvc_hash import dvc_md5, tree_md5
from synthfactory.ops.storage.shards import decode_png, finished_shards, verify_shard
from synthfactory.params import ProjectConfig, parse_params
from tests.support import tiny_params

UPSTREAM = ["real_images", "prompts", "generator"]


def _materialize(config: ProjectConfig, selection: list[str],
                 partition_range: tuple[str, str] | None = None) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config)
    tags = {}
    if partition_range:
        tags = {"dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1]}
    return dg.materialize(list(defs.assets), selection=selection, resources=defs.resources,
                          tags=tags)


def _shard_digests(root: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in finished_shards(root / "synthetic_shards")}


def test_graph_writes_shards_that_webdataset_reads(tiny_config: ProjectConfig) -> None:
    result = _materialize(tiny_config, UPSTREAM + ["synthetic_shards"], ("00000", "00002"))
    assert result.success
    root = Path(tiny_config.store.root)

    real = json.loads((root / "real_images" / "manifest.json").read_text())
    assert real["classes"] == [str(d) for d in range(10)]
    assert sum(sum(real["counts"][split].values()) for split in ("train", "val", "test")) == 1797

    generator = json.loads((root / "generator" / "generator.json").read_text())
    assert generator["backend"] == "ddpm" and len(generator["digest"]) == 64
    assert (root / "generator" / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    shards = finished_shards(root / "synthetic_shards")
    assert [p.name for p in shards] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    assert all(verify_shard(p) == [] for p in shards)
    rows = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert len(rows) == 60  # 10 classes × 6 images
    first = json.loads(rows[0]["json"])
    assert first["prompt"]["text"] == "a handwritten digit 0"
    assert first["generator_digest"] == generator["digest"]
    assert first["sampler"]["steps"] == 4
    assert decode_png(rows[0]["png"]).shape == (8, 8)
    assert sorted({int(r["cls"]) for r in rows}) == list(range(10))

    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    shard_meta = events["synthetic_shards"].materialization.metadata
    assert shard_meta["n_images"].value == 60 and shard_meta["images_per_second"].value > 0
    assert events["real_images"].materialization.metadata["n_test"].value > 500


def test_same_params_give_byte_identical_shards_and_one_shard_reruns_alone(
        tmp_path: Path) -> None:
    first = parse_params(tiny_params(tmp_path / "a"))
    second = parse_params(tiny_params(tmp_path / "b"))
    for config in (first, second):
        assert _materialize(config, UPSTREAM + ["synthetic_shards"], ("00000", "00002")).success
    digests = _shard_digests(Path(first.store.root))
    assert digests == _shard_digests(Path(second.store.root))

    # Delete one shard and re-run only its partition: exactly that shard comes back.
    shard = Path(first.store.root) / "synthetic_shards" / "shard-00001.tar"
    shard.unlink()
    mtime_other = (shard.parent / "shard-00000.tar").stat().st_mtime_ns
    rerun = _materialize(first, ["synthetic_shards"], ("00001", "00001"))
    assert rerun.success
    assert _shard_digests(Path(first.store.root)) == digests
    # One partition's data version is DVC's digest of that shard's files; dvc_md5 is the whole
    # directory's (what dvc.lock records for the stage).
    (event,) = rerun.get_asset_materialization_events()
    files = [p for p in shard.parent.iterdir() if "00001" in p.name]
    assert shard in files
    assert event.partition == "00001"
    assert event.materialization.tags["dagster/data_version"] == tree_md5(shard.parent, files)
    assert event.materialization.metadata["dvc_md5"].value == dvc_md5(shard.parent)
    assert (shard.parent / "shard-00000.tar").stat().st_mtime_ns == mtime_other


def test_imagefolder_source_runs_through_the_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    from PIL import Image

    for name, colour in (("red things", 0), ("blue things", 2)):
        folder = tmp_path / "folder" / name
        folder.mkdir(parents=True)
        for index in range(6):
            pixels = rng.integers(0, 60, (20, 24, 3), dtype=np.uint8)
            pixels[:, :, colour] = 220
            Image.fromarray(pixels).save(folder / f"{index}.png")
    (tmp_path / "folder" / "red things" / "corrupt.png").write_bytes(b"broken")
    config = parse_params(tiny_params(
        tmp_path, real_images={"source": "imagefolder", "root": str(tmp_path / "folder")},
        prompts={"templates": ["a photo of {name}"]}))
    result = _materialize(config, UPSTREAM + ["synthetic_shards"], ("00000", "00000"))
    assert result.success
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert events["real_images"].materialization.metadata["skipped"].value == {
        "unrecognised image format": 1}
    rows = list(wds.WebDataset(str(Path(config.store.root) / "synthetic_shards" /
                                   "shard-00000.tar"), shardshuffle=False))
    assert len(rows) == 12 and decode_png(rows[0]["png"]).shape == (8, 8, 3)
    assert json.loads(rows[1]["json"])["prompt"]["text"] == "a photo of red things"
