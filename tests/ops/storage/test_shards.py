"""Shard writing and reading: round trip, determinism, sidecars, integrity, WebDataset compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.shards import (
    Sample,
    decode_png,
    finished_shards,
    load_arrays,
    read_samples,
    read_shard_info,
    verify_shard,
    write_shard,
)


def _samples(n: int, channels: int = 1, seed: int = 0) -> list[Sample]:
    generator = np.random.default_rng(seed)
    shape = (8, 8) if channels == 1 else (8, 8, 3)
    return [Sample(key=f"k{i:04d}", image=generator.integers(0, 256, shape, dtype=np.uint8),
                   label=i % 3, meta={"index": i, "text": f"sample {i}"}) for i in range(n)]


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_keeps_pixels_labels_and_metadata(tmp_path: Path, channels: int) -> None:
    samples = _samples(7, channels)
    info = write_shard(tmp_path / "a.tar", samples)
    assert info.count == 7 and info.keys == [s.key for s in samples]
    back = list(read_samples([tmp_path / "a.tar"]))
    for written, read in zip(samples, back, strict=True):
        assert read.key == written.key and read.label == written.label
        assert read.meta == written.meta
        np.testing.assert_array_equal(read.image, written.image)


def test_same_samples_give_byte_identical_shards(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.tar", _samples(5))
    write_shard(tmp_path / "b.tar", _samples(5))
    assert sha256_file(tmp_path / "a.tar") == sha256_file(tmp_path / "b.tar")


def test_sidecar_records_count_and_digest_and_is_written_last(tmp_path: Path) -> None:
    info = write_shard(tmp_path / "a.tar", _samples(4), extra={"generator_digest": "abc"})
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["sha256"] == sha256_file(tmp_path / "a.tar") == info.sha256
    assert sidecar["count"] == 4 and sidecar["generator_digest"] == "abc"
    assert read_shard_info(tmp_path / "a.tar") == info
    assert finished_shards(tmp_path) == [tmp_path / "a.tar"]


def test_failed_write_leaves_nothing_that_looks_finished(tmp_path: Path) -> None:
    def exploding():
        yield from _samples(3)
        raise RuntimeError("generator crashed")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "a.tar", exploding())
    assert list(tmp_path.iterdir()) == []


def test_rewrite_that_fails_keeps_the_previous_shard_whole(tmp_path: Path) -> None:
    previous = write_shard(tmp_path / "a.tar", _samples(3))

    def exploding():
        yield from _samples(1)
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "a.tar", exploding())
    assert read_shard_info(tmp_path / "a.tar") == previous
    assert verify_shard(tmp_path / "a.tar") == []
    assert finished_shards(tmp_path) == [tmp_path / "a.tar"]


def test_verify_detects_a_corrupted_byte(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.tar", _samples(3))
    assert verify_shard(tmp_path / "a.tar") == []
    data = bytearray((tmp_path / "a.tar").read_bytes())
    data[600] ^= 0xFF
    (tmp_path / "a.tar").write_bytes(bytes(data))
    problems = verify_shard(tmp_path / "a.tar")
    assert len(problems) == 1 and "sha256" in problems[0]


def test_plain_webdataset_reads_the_shards(tmp_path: Path) -> None:
    samples = _samples(6, channels=3)
    write_shard(tmp_path / "a.tar", samples)
    rows = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False))
    assert [row["__key__"] for row in rows] == [s.key for s in samples]
    for row, sample in zip(rows, samples, strict=True):
        assert int(row["cls"]) == sample.label
        assert json.loads(row["json"]) == sample.meta
        np.testing.assert_array_equal(decode_png(row["png"]), sample.image)


def test_keys_that_webdataset_would_split_are_rejected(tmp_path: Path) -> None:
    bad = Sample(key="a.b", image=np.zeros((8, 8), np.uint8), label=0)
    with pytest.raises(ValueError, match="'a.b'"):
        write_shard(tmp_path / "a.tar", [bad])


def test_load_arrays_stacks_channels_last(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.tar", _samples(4))
    images, labels, keys = load_arrays([tmp_path / "a.tar"])
    assert images.shape == (4, 8, 8, 1) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 0] and keys[0] == "k0000"
