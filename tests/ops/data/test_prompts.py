"""Prompt expansion, seeds and shard slicing."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthfactory.ops.data.prompts import (
    PromptRecord,
    expand_prompts,
    read_prompts,
    shard_count,
    shard_key,
    shard_slice,
    write_prompts,
)
from synthfactory.ops.seeds import derive_seed


def _expand(**overrides: object) -> list[PromptRecord]:
    settings = {"class_names": ["cat", "dog", "owl"], "images_per_class": 4,
                "templates": ["a {name}", "a photo of a {name}"], "guidance": [1.0, 3.0, 5.0],
                "negative_prompt": "blurry", "global_seed": 7} | overrides
    return expand_prompts(**settings)


def test_one_record_per_image_with_classes_interleaved() -> None:
    records = _expand()
    assert len(records) == 12
    assert [r.class_name for r in records[:6]] == ["cat", "dog", "owl"] * 2
    assert [r.index for r in records] == list(range(12))
    assert len({r.key for r in records}) == 12


def test_templates_and_guidance_cycle_per_class() -> None:
    cats = [r for r in _expand() if r.class_name == "cat"]
    assert [r.text for r in cats] == ["a cat", "a photo of a cat"] * 2
    assert [r.guidance for r in cats] == [1.0, 3.0, 5.0, 1.0]
    assert all(r.negative_text == "blurry" for r in cats)


def test_seeds_are_distinct_reproducible_and_follow_the_global_seed() -> None:
    records = _expand()
    assert len({r.seed for r in records}) == len(records)
    assert records == _expand()
    assert records[5].seed == derive_seed(7, "synthetic_shards", 5)
    assert [r.seed for r in _expand(global_seed=8)] != [r.seed for r in records]


@pytest.mark.parametrize("names, match", [
    (["a", "a"], "more than once"), (["a", " "], "empty"), ([], "empty")])
def test_bad_class_lists_are_rejected(names: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _expand(class_names=names)


def test_zero_images_per_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="images_per_class = 0"):
        _expand(images_per_class=0)


def test_shards_cover_the_records_exactly_once() -> None:
    records = _expand()
    assert shard_count(len(records), 5) == 3
    keys = [shard_key(i) for i in range(3)]
    assert keys == ["00000", "00001", "00002"]
    pieces = [shard_slice(records, key, 5) for key in keys]
    assert [len(p) for p in pieces] == [5, 5, 2]
    assert [r for piece in pieces for r in piece] == records
    with pytest.raises(ValueError, match="past the 12 prompt records"):
        shard_slice(records, "00003", 5)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    records = _expand(class_names=["über", "a b", "../x"])
    write_prompts(tmp_path / "p.jsonl", records)
    assert read_prompts(tmp_path / "p.jsonl") == records
