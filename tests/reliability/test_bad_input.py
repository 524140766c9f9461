"""Bad input: one line naming the value and the fix, exit 2, no traceback unless --debug.

The CLI is called in-process through `main` (the same code the `synthfactory` command runs), so
the many cases stay fast; stderr is captured whole and checked for tracebacks.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest
import yaml
from PIL import Image

from synthfactory.cli import main
from synthfactory.definitions import build_definitions
from synthfactory.ops.data.imagefolder import load_imagefolder
from synthfactory.ops.data.prompts import check_class_names
from synthfactory.ops.distillation.coresets import select_random
from synthfactory.params import parse_params
from tests.support import ONE_THREAD, assert_one_error_line, tiny_params



def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any],
         *extra: str) -> tuple[int, str]:
    params = tmp_path / "bad.yaml"
    params.write_text(yaml.safe_dump(raw))
    code = main(["run", "--params", str(params), *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("section, values, names", [
    ("prompts", {"images_per_clas": 3}, ["prompts.images_per_clas", "unknown key"]),
    ("prompt", {"images_per_class": 3}, ["prompt", "unknown key"]),
    ("prompts", {"images_per_class": "ten"}, ["prompts.images_per_class = 'ten'", "integer"]),
    ("prompts", {"images_per_class": 0}, ["prompts.images_per_class = 0", "greater than 0"]),
    ("classifiers", {"n_seeds": -3}, ["classifiers.n_seeds = -3", "greater than 0"]),
    ("distilled_set", {"ipcs": [0]}, ["distilled_set.ipcs = [0]", "at least 1"]),
    ("distilled_set", {"ipc": 10}, ["distilled_set.ipc is gone: use distilled_set.ipcs"]),
    ("distilled_set", {"method": "dm"}, ["distilled_set.method is gone: use distilled_set.methods"]),
    ("distilled_set", {"sources": ["web"]},
     ["distilled_set.sources = ['web']", "not one of filtered, synthetic, real"]),
    ("synthetic_shards", {"shard_size": -1}, ["synthetic_shards.shard_size = -1"]),
    ("distilled_set", {"methods": ["gm"]},
     ["distilled_set.methods = ['gm']", "'gm' not one of random", "mtt, datm"]),
    ("generator", {"backend": "gan"}, ["generator.backend = 'gan'", "'ddpm'"]),
    ("real_images", {"source": "mnist"}, ["real_images.source = 'mnist'", "'digits'"]),
    ("synthetic_shards", {"scheduler": "heun"}, ["synthetic_shards.scheduler = 'heun'"]),
    ("filtered_set", {"threshold": "high"}, ["filtered_set.threshold = 'high'"]),
    ("generator", {"ddpm": {"train_steps": 10}},
     ["generator.ddpm.train_steps = 10", "greater than or equal to 20"]),
    ("generator", {"ddpm": {"checkpoint_every": -1}}, ["generator.ddpm.checkpoint_every = -1"]),
])
def test_params_errors_exit_2_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          section: str, values: dict, names: list[str]) -> None:
    raw = tiny_params(tmp_path)
    raw[section] = {**raw.get(section, {}), **values}
    code, err = _run(tmp_path, capsys, raw)
    assert code == 2
    assert_one_error_line(err, "bad.yaml", *names)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    params = tmp_path / "bad.yaml"
    params.write_text(yaml.safe_dump(tiny_params(tmp_path, prompts={"images_per_class": 0})))
    with pytest.raises(ValueError, match="prompts.images_per_class = 0"):
        main(["--debug", "run", "--params", str(params)])


def test_a_missing_params_file_and_a_bad_selection_exit_2(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert_one_error_line(capsys.readouterr().err, "nope.yaml", "does not exist")
    code, err = _run(tmp_path, capsys, tiny_params(tmp_path), "--select", "key:promts")
    assert code == 2
    assert_one_error_line(err, "promts")
    code, err = _run(tmp_path, capsys, tiny_params(tmp_path), "--partitions", "00009")
    assert code == 2
    assert_one_error_line(err, "'00009'", "00000...00002")


def _imagefolder_params(tmp_path: Path, root: Path) -> dict[str, Any]:
    return tiny_params(tmp_path, **ONE_THREAD,
                       real_images={"source": "imagefolder", "root": str(root), "resolution": 8})


def test_imagefolder_without_class_folders_exits_2(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "loose.png").write_bytes(b"")
    code, err = _run(tmp_path, capsys, _imagefolder_params(tmp_path, root))
    assert code == 2
    assert_one_error_line(err, str(root), "no class folders", "<root>/<class_name>/")
    code, err = _run(tmp_path, capsys, _imagefolder_params(tmp_path, tmp_path / "missing"))
    assert code == 2
    assert_one_error_line(err, "missing", "is not a directory")


def test_blank_and_look_alike_class_folders_exit_2(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "photos"
    (root / " ").mkdir(parents=True)
    (root / "cat").mkdir()
    code, err = _run(tmp_path, capsys, _imagefolder_params(tmp_path, root))
    assert code == 2
    assert_one_error_line(err, "class name ' ' is empty")
    (root / " ").rmdir()
    (root / "caf\u00e9").mkdir()   # é as one code point ...
    (root / "cafe\u0301").mkdir()  # ... and as e + combining accent: the same name on screen
    code, err = _run(tmp_path, capsys, _imagefolder_params(tmp_path, root))
    assert code == 2
    assert_one_error_line(err, "more than once", "NFC")


def test_class_names_must_be_distinct_and_non_empty() -> None:
    with pytest.raises(ValueError, match="more than once"):
        check_class_names(["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="'' is empty"):
        check_class_names(["cat", ""])
    check_class_names(["../x", "a/b", "caf\u00e9", "two words"])  # odd but distinct: allowed


def test_a_step_that_fails_on_bad_input_exits_2_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    for index in range(3):
        Image.new("RGB", (12, 12), (200, index, 0)).save(root / "cat" / f"{index}.png")
    (root / "dog" / "a.png").write_bytes(b"")
    # Non-empty files with an image extension: the CLI's preflight counts them (it decodes
    # nothing), so it is the step that finds out they are not images.
    for name in ("b.jpg", "c.jpg", "d.jpg"):
        (root / "dog" / name).write_text("not a jpeg")
    code, err = _run(tmp_path, capsys, _imagefolder_params(tmp_path, root),
                     "--select", "real_images")
    assert code == 2
    line = assert_one_error_line(err, "real_images:", "'dog'", "no readable image",
                                  "1 empty file", "3 unrecognised image format")
    assert "add images to it or remove the folder" in line
    assert "Execution of step \"real_images\" failed" in err  # the log says which step, briefly


def test_ipc_larger_than_a_class_of_the_source_set_names_the_class_and_the_fix() -> None:
    labels = np.array([0] * 5 + [1] * 2)
    with pytest.raises(ValueError, match=r"class 1 has 2 samples.*ipc = 3: lower distilled_set.ipcs"):
        select_random(labels, 3, seed=0)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims `width`×`height` pixels: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _messy_folder(root: Path) -> None:
    good = root / "good"
    messy = root / "messy"
    good.mkdir(parents=True)
    messy.mkdir()
    for index in range(3):
        Image.new("RGB", (16, 16), (index * 60, 100, 30)).save(good / f"{index}.png")
    Image.new("CMYK", (16, 16), (0, 200, 0, 0)).save(messy / "cmyk.jpg")
    Image.fromarray(np.full((16, 16), 60000, np.uint16)).save(messy / "deep.png")
    Image.new("RGBA", (16, 16), (0, 0, 255, 128)).save(messy / "alpha.png")
    Image.new("RGB", (16, 16), (1, 2, 3)).save(messy / "ok.png")
    (messy / "zero.png").write_bytes(b"")
    (messy / "notes.txt").write_text("not an image")
    (messy / "fake.png").write_text("text pretending to be a png")
    intact = (good / "0.png").read_bytes()
    (messy / "truncated.png").write_bytes(intact[:len(intact) // 2])
    _png_header_only(messy / "bomb.png", 30000, 30000)  # 900 megapixels


def test_messy_image_folder_skips_per_reason_and_converts_modes(tmp_path: Path) -> None:
    _messy_folder(tmp_path)
    data = load_imagefolder(str(tmp_path), resolution=8, channels=3)
    assert dict(data.skipped) == {"empty file": 1, "not an image file": 1,
                                  "unrecognised image format": 1, "corrupt image": 1,
                                  "too large": 1}
    assert dict(data.converted) == {"CMYK": 1, "I;16": 1, "RGBA": 1}
    assert sorted(data.sources) == ["good/0.png", "good/1.png", "good/2.png", "messy/alpha.png",
                                    "messy/cmyk.jpg", "messy/deep.png", "messy/ok.png"]


def test_skips_and_conversions_reach_the_asset_metadata_and_the_log(tmp_path: Path) -> None:
    _messy_folder(tmp_path / "photos")
    config = parse_params(_imagefolder_params(tmp_path, tmp_path / "photos"))
    defs = build_definitions(config)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(list(defs.assets), selection=["real_images"], resources=defs.resources,
                            instance=instance)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["skipped"].value == {"corrupt image": 1, "empty file": 1,
                                         "not an image file": 1, "too large": 1,
                                         "unrecognised image format": 1}
    assert metadata["converted"].value == {"CMYK": 1, "I;16": 1, "RGBA": 1}
    warnings = [record.user_message for record in instance.all_logs(result.run_id)
                if record.level == 30]  # logging.WARNING
    assert "real_images: skipped 1 file(s): too large" in warnings
    assert "real_images: converted 1 image(s) from mode CMYK to RGB" in warnings


def test_a_missing_or_pickle_only_model_directory_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tiny_params(tmp_path, generator={"backend": "diffusers",
                                           "model": str(tmp_path / "no-such-model")})
    raw["generator"].pop("ddpm")
    code, err = _run(tmp_path, capsys, raw, "--select", "key:generator")
    assert code == 2
    assert_one_error_line(err, "generator.model", "no-such-model", "does not exist")
    pickled = tmp_path / "pickled" / "unet"
    pickled.mkdir(parents=True)
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04 never read")
    raw["generator"]["model"] = str(pickled.parent)
    code, err = _run(tmp_path, capsys, raw, "--select", "key:generator")
    assert code == 2
    assert_one_error_line(err, "diffusion_pytorch_model.bin", "safetensors are required")
