"""The data-quality checks on real shards and summaries: they pass on good data and name the fault."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from synthfactory.ops import checks
from synthfactory.ops.data.prompts import PromptRecord, expand_prompts, shard_slice
from synthfactory.ops.storage.shards import Sample, sidecar_path, write_shard


def _shard(path: Path, labels: list[int], start: int = 0) -> None:
    rng = np.random.default_rng(start)
    write_shard(path, (Sample(key=f"s{start + i:05d}", image=rng.integers(0, 255, (8, 8), np.uint8),
                              label=label) for i, label in enumerate(labels)))


def test_shard_integrity_passes_then_names_each_fault(tmp_path: Path) -> None:
    _shard(tmp_path / "shard-00000.tar", [0, 1, 2])
    _shard(tmp_path / "shard-00001.tar", [0, 1, 2], start=3)
    good = checks.shard_integrity(tmp_path)
    assert good.passed and good.details["samples"] == 6 and good.details["shards_checked"] == 2

    # Altered bytes: the sha256 no longer matches the sidecar.
    tar = tmp_path / "shard-00001.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF
    tar.write_bytes(bytes(data))
    bad = checks.shard_integrity(tmp_path)
    assert not bad.passed and "shard-00001.tar: sha256" in bad.description

    # A sidecar whose count disagrees (bytes intact, sidecar edited with the right sha256).
    _shard(tmp_path / "shard-00001.tar", [0, 1, 2], start=3)
    sidecar = json.loads(sidecar_path(tar).read_text())
    sidecar["count"] = 4
    sidecar_path(tar).write_text(json.dumps(sidecar))
    assert "3 samples, sidecar says 4" in checks.shard_integrity(tmp_path).description

    # A tar without a sidecar is an interrupted write.
    sidecar_path(tar).unlink()
    assert "no sidecar" in checks.shard_integrity(tmp_path).description
    assert not checks.shard_integrity(tmp_path / "empty").passed


def test_shard_integrity_decodes_every_sample(tmp_path: Path) -> None:
    # A PNG member that is not an image, in a shard whose sidecar is consistent with its bytes.
    write_shard(tmp_path / "shard-00000.tar",
                [Sample(key="a", image=np.zeros((8, 8), np.uint8), label=0)])
    import io
    import tarfile

    from synthfactory.ops.storage.atomic import sha256_file

    tar_path = tmp_path / "shard-00000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, payload in (("a.png", b"not a png"), ("a.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    sidecar = json.loads(sidecar_path(tar_path).read_text())
    sidecar["sha256"] = sha256_file(tar_path)
    sidecar_path(tar_path).write_text(json.dumps(sidecar))
    outcome = checks.shard_integrity(tmp_path)
    assert not outcome.passed and "does not decode" in outcome.description


NAMES = ["cat", "dog", "owl"]


def _prompted_store(directory: Path, *, keep: Callable[[PromptRecord], bool] = lambda r: True,
                    bad_images: dict[str, int] | None = None) -> list[PromptRecord]:
    """Two shards of 6 records (3 classes × 4 images), written as `synthetic_shards` writes
    them; `keep` leaves records out of shard 00000, `bad_images` is its sidecar's count."""
    records = expand_prompts(NAMES, 4, ["a {name}"], [2.0], "", 0)
    for key in ("00000", "00001"):
        batch = shard_slice(records, key, 6)
        write_shard(directory / f"shard-{key}.tar",
                    [Sample(r.key, np.full((4, 4), 9 * r.index, np.uint8), r.class_id)
                     for r in batch if key != "00000" or keep(r)],
                    extra={"bad_images": (bad_images or {}) if key == "00000" else {}})
    return records


def test_class_balance_counts_against_the_prompt_records(tmp_path: Path) -> None:
    records = _prompted_store(tmp_path)
    ok = checks.shard_class_balance(tmp_path, records, NAMES, 6)
    assert ok.passed, ok.description
    assert ok.details["per_class"]["cat"] == {"images": 4, "expected": 4, "dropped": 0,
                                              "missing": 0}
    assert ok.details["max_over_min"] == 1.0


def test_class_balance_fails_on_a_deleted_shard_naming_each_class(tmp_path: Path) -> None:
    records = _prompted_store(tmp_path)
    (tmp_path / "shard-00001.tar").unlink()
    (tmp_path / "shard-00001.json").unlink()
    gone = checks.shard_class_balance(tmp_path, records, NAMES, 6)
    assert not gone.passed and gone.details["missing_shards"] == ["00001"]
    assert gone.details["missing_per_class"] == {"cat": 2, "dog": 2, "owl": 2}
    assert "6 of 12 images" in gone.description and "class cat: 2 missing" in gone.description
    # Recorded as made (Dagster's record) but absent: lost, not merely "not made yet".
    assert not checks.shard_class_balance(tmp_path, records, NAMES, 6,
                                          made={"00000", "00001"}).passed
    # A backfill that so far made only 00000: the rest is listed, not counted as missing.
    partial = checks.shard_class_balance(tmp_path, records, NAMES, 6, made={"00000"})
    assert partial.passed and partial.details["not_made_yet"] == ["00001"]
    assert "not made yet: 00001" in partial.description


def test_class_balance_fails_when_a_class_lost_images_the_sidecar_does_not_count(
        tmp_path: Path) -> None:
    # Shard 00000 rewritten without its cats: intact (sha256 and count match its sidecar).
    records = _prompted_store(tmp_path, keep=lambda r: r.class_id != 0)
    assert checks.shard_integrity(tmp_path).passed
    lost = checks.shard_class_balance(tmp_path, records, NAMES, 6)
    assert not lost.passed and lost.details["missing_per_class"] == {"cat": 2}
    assert "class cat: 2 missing" in lost.description
    assert "shard 00000: 2 image(s) absent, its sidecar counts 0 dropped" in lost.description


def test_class_balance_allows_exactly_the_drops_the_sidecars_count(tmp_path: Path) -> None:
    records = _prompted_store(tmp_path, keep=lambda r: r.class_id != 0,
                              bad_images={"dropped:black": 1, "dropped:nonfinite": 1,
                                          "regenerated:black": 3})
    counted = checks.shard_class_balance(tmp_path, records, NAMES, 6)
    assert counted.passed, counted.description
    assert counted.details["per_class"]["cat"] == {"images": 2, "expected": 4, "dropped": 2,
                                                   "missing": 0}
    assert "2 dropped as bad images" in counted.description
    # One counted drop does not excuse two absent images.
    records = _prompted_store(tmp_path, keep=lambda r: r.class_id != 0,
                              bad_images={"dropped:black": 1})
    assert not checks.shard_class_balance(tmp_path, records, NAMES, 6).passed


def test_class_balance_fails_on_a_relabelled_or_foreign_sample(tmp_path: Path) -> None:
    records = _prompted_store(tmp_path)
    first = shard_slice(records, "00000", 6)
    write_shard(tmp_path / "shard-00000.tar",
                [Sample(r.key, np.zeros((4, 4), np.uint8), (r.class_id + 1) % 3 if i == 0
                        else r.class_id) for i, r in enumerate(first)])
    relabelled = checks.shard_class_balance(tmp_path, records, NAMES, 6)
    assert not relabelled.passed and "is labelled 1, its prompt asked for class 0" in \
        relabelled.description
    write_shard(tmp_path / "shard-00000.tar",
                [Sample(r.key, np.zeros((4, 4), np.uint8), r.class_id) for r in first]
                + [Sample("s9999999", np.zeros((4, 4), np.uint8), 0)])
    foreign = checks.shard_class_balance(tmp_path, records, NAMES, 6)
    assert not foreign.passed and "'s9999999' is not among its prompt records" in \
        foreign.description


def test_pass_rate_floor_and_every_class_kept() -> None:
    per_class = {"cat": {"pass_rate": 0.9, "kept": 9}, "dog": {"pass_rate": 0.1, "kept": 1},
                 "owl": {"pass_rate": 0.0, "kept": 0}}
    floor = checks.pass_rate_floor(per_class, 0.2)
    assert not floor.passed and floor.details["below_floor"] == {"dog": 0.1, "owl": 0.0}
    assert checks.pass_rate_floor(per_class, 0.0).passed
    kept = checks.every_class_kept(per_class, 1)
    assert not kept.passed and kept.details["short"] == {"owl": 0}


def test_distilled_size(tmp_path: Path) -> None:
    _shard(tmp_path / "distilled-00000.tar", [0, 0, 1, 1])
    assert checks.distilled_size(tmp_path, n_classes=2, ipc=2).passed
    off = checks.distilled_size(tmp_path, n_classes=3, ipc=2)
    assert not off.passed and off.details["classes_off"] == {2: 0}


def test_accuracy_floor(tmp_path: Path) -> None:
    """Guards: an arm below its floor fails; a configured arm missing from the report fails (it
    would pass a check that looked only at the rows present); a floor on an arm that is not
    configured is an error; an arm without a floor is named, not silently skipped."""
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"arms": {"real": {"accuracy_mean": 0.95},
                                            "synthetic": {"accuracy_mean": 0.70}}}))
    ok = checks.accuracy_floor(metrics, ["real", "synthetic"], {"real": 0.9})
    assert ok.passed and ok.details["no_floor"] == ["synthetic"]
    assert "no floor set for synthetic" in ok.description
    assert ok.details["arms"] == {"real": {"accuracy": 0.95, "floor": 0.9},
                                  "synthetic": {"accuracy": 0.7, "floor": None}}
    low = checks.accuracy_floor(metrics, ["real", "synthetic"], {"real": 0.9, "synthetic": 0.8})
    assert not low.passed and "below the accuracy floor" in low.description
    assert "'synthetic'" in low.description and "'real'" not in low.description
    # The report lacks a configured arm: it fails even though no floor is set on it.
    missing = checks.accuracy_floor(metrics, ["real", "synthetic", "mixed"], {"real": 0.9})
    assert not missing.passed and missing.details["missing"] == ["mixed"]
    assert "missing from metrics.json: ['mixed']" in missing.description
    assert missing.details["arms"]["mixed"] == {"accuracy": None, "floor": None}
    with pytest.raises(ValueError, match=r"\['distilled'\] that are not configured"):
        checks.accuracy_floor(metrics, ["real", "synthetic"], {"distilled": 0.5})