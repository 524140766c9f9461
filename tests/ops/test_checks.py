"""The data-quality checks on real shards and summaries: they pass on good data and name the fault."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthfactory.ops import checks
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


def test_class_balance_compares_with_what_the_prompts_asked() -> None:
    names = ["cat", "dog", "owl"]
    ok = checks.class_balance([0, 1, 2, 0, 1, 2], names, {0: 2, 1: 2, 2: 2})
    assert ok.passed and ok.details["max_over_min"] == 1.0
    short = checks.class_balance([0, 1, 0, 1, 2, 0], names, {0: 2, 1: 2, 2: 2})
    assert not short.passed
    assert short.details["per_class"]["cat"] == {"count": 3, "expected": 2}
    stray = checks.class_balance([0, 1, 7], names, {0: 1, 1: 1})
    assert not stray.passed and stray.details["unknown_labels"] == [7]


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
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"arms": {"real": {"accuracy_mean": 0.95},
                                            "synthetic": {"accuracy_mean": 0.70}}}))
    assert checks.accuracy_floor(metrics, {"real": 0.9}).passed
    low = checks.accuracy_floor(metrics, {"real": 0.9, "synthetic": 0.8})
    assert not low.passed and set(low.details["arms"]) == {"real", "synthetic"}
    with pytest.raises(ValueError, match="does not have"):
        checks.accuracy_floor(metrics, {"distilled": 0.5})
