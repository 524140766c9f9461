"""Refuse the meaningless, early: one line naming the value and the fix, exit 2, no traceback,
and nothing trained (each case stops before the first step, or in `real_images`, the first one).

The CLI is called in-process through `main`, like tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from synthfactory.cli import main
from tests.support import (ONE_THREAD, assert_one_error_line, tiny_params,
                           write_labelled_webdataset)



def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any],
             *names: str, step: str | None = None) -> str:
    """Run the CLI; assert exit 2, one clean error line holding `names`, and no training."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    code = main(["run", "--params", str(params)])
    out, err = capsys.readouterr()
    assert code == 2, err
    line = assert_one_error_line(err, *names)
    if step is None:  # refused before the run: no step started, nothing written
        assert out == "" and not (tmp_path / "data").exists(), out
    else:  # refused by the first step, after loading: nothing downstream ran
        assert line.startswith(f"synthfactory: error: {step}: "), line
        assert "FAILED in ['real_images']" in out
    assert not (tmp_path / "data" / "generator").exists()
    return line


def _folder(root: Path, sizes: dict[str, int], bad: dict[str, int] | None = None) -> Path:
    """An image folder: `sizes[c]` decodable images and `bad[c]` undecodable ones per class."""
    noise = np.random.default_rng(0)
    for index, (name, count) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        for number in range(count):
            pixels = noise.integers(0, 60, (10, 10, 3), dtype=np.uint8)
            pixels[:, index % 10] = 250
            Image.fromarray(pixels).save(root / name / f"{number}.png")
        for number in range((bad or {}).get(name, 0)):
            (root / name / f"broken{number}.png").write_text("not a png")
    return root


def _imagefolder(tmp_path: Path, root: Path, **real: Any) -> dict[str, Any]:
    return tiny_params(tmp_path, **ONE_THREAD,
                       real_images={"source": "imagefolder", "root": str(root), **real})


def test_a_single_class_folder_is_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "photos", {"cat": 30})
    _refused(tmp_path, capsys, _imagefolder(tmp_path, root), "gives 1 class ('cat')",
             "at least 2 classes", "add a class")


def test_a_single_class_list_is_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", ["cat", "dog"], per_class=5)
    raw = tiny_params(tmp_path, **ONE_THREAD, real_images={
        "source": "webdataset", "root": str(root), "class_names": ["cat"]})
    _refused(tmp_path, capsys, raw, "real_images.class_names gives 1 class", "at least 2")


def test_a_class_too_small_for_the_splits_is_refused_before_decoding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "photos", {"cat": 30, "dog": 2})
    line = _refused(tmp_path, capsys, _imagefolder(tmp_path, root),
                    "'dog': 1 train, 0 validation, 1 test",
                    "at least 1 train, 1 validation, 1 test image",
                    "3 images per class before the split", "add images")
    assert "'cat'" not in line


def test_a_webdataset_class_too_small_is_refused_from_its_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_labelled_webdataset(tmp_path / "wds", ["cat", "dog"], per_class=2)
    raw = tiny_params(tmp_path, **ONE_THREAD, real_images={"source": "webdataset",
                                                            "root": str(root)})
    _refused(tmp_path, capsys, raw, "2 class(es) of real_images.root",
             "'cat': 1 train, 0 validation, 1 test", "'dog': 1 train, 0 validation, 1 test")


def test_an_own_test_set_without_a_class_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "photos", {"cat": 20, "dog": 20})
    test_root = _folder(tmp_path / "test", {"cat": 5})
    (test_root / "dog").mkdir()  # the folder is there, without an image
    _refused(tmp_path, capsys, _imagefolder(tmp_path, root, test_root=str(test_root)),
             "+ test_root", "'dog': 18 train, 2 validation, 0 test", "1 test image")


def test_a_class_that_decodes_too_few_images_is_refused_by_real_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The preflight counts 5 files of 'dog' (it decodes nothing); 3 are not images, so the
    check after decoding refuses the class, in real_images, before the generator trains."""
    root = _folder(tmp_path / "photos", {"cat": 30, "dog": 2}, bad={"dog": 3})
    _refused(tmp_path, capsys, _imagefolder(tmp_path, root), "'dog': 1 train, 0 validation",
             step="real_images")


@pytest.mark.parametrize("overrides, names", [
    ({"distilled_set": {"ipcs": [2, 4]}},
     ["prompts.images_per_class = 6 leaves a class at most 3 images after "
      "filtered_set.top_fraction = 0.5, fewer than distilled_set.ipcs 4 (source filtered)",
      "raise prompts.images_per_class to at least 7 or lower the ipcs to 3 or less"]),
    ({"distilled_set": {"ipcs": [7], "sources": ["synthetic"]}},
     ["prompts.images_per_class = 6 is below distilled_set.ipcs 7 (source synthetic",
      "raise prompts.images_per_class to at least 7"]),
    ({"distilled_set": {"ipcs": [3], "sources": ["real"]}, "real_images": {"few_shot": 2}},
     ["real_images.few_shot = 2 leaves a class 2 real images, fewer than distilled_set.ipcs 3",
      "raise few_shot to at least 3"]),
])
def test_images_per_class_below_what_ipc_needs_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict,
        names: list[str]) -> None:
    _refused(tmp_path, capsys, tiny_params(tmp_path, **ONE_THREAD, **overrides), *names)


def test_a_class_with_fewer_train_images_than_a_real_cell_distils_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Distilling the real images at ipc 12 needs 12 train images of every class: 'dog' has 10
    after the splits (16 images: 5 test, 1 validation)."""
    root = _folder(tmp_path / "photos", {"cat": 40, "dog": 16})
    raw = _imagefolder(tmp_path, root)
    raw["distilled_set"] = {**raw["distilled_set"], "ipcs": [12], "sources": ["real"]}
    raw["prompts"] = {**raw["prompts"], "images_per_class": 30}
    line = _refused(tmp_path, capsys, raw, "'dog': 10 train, 1 validation, 5 test",
                    "at least 12 train, 1 validation, 1 test image (distilled_set.ipcs up to 12 "
                    "with source real)")
    assert "'cat'" not in line


def test_an_empty_retrieval_pool_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The retrieved arm's pool is counted (files, not decoded) before the first step: a pool
    folder with no image file would otherwise fail only after the generator and the judge."""
    pool = tmp_path / "pool"
    (pool / "cats").mkdir(parents=True)
    (pool / "cats" / "notes.txt").write_text("not an image")
    raw = tiny_params(tmp_path, **ONE_THREAD, retrieval={"pool": str(pool)},
                      classifiers={"arms": ["real", "retrieved"]})
    _refused(tmp_path, capsys, raw, f"retrieval.pool {str(pool)!r} holds no image file",
             "remove retrieved from classifiers.arms")


def test_a_missing_retrieval_pool_of_shards_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tiny_params(tmp_path, **ONE_THREAD, retrieval={"pool": str(tmp_path / "pool-*.tar")},
                      classifiers={"arms": ["real", "retrieved"]})
    _refused(tmp_path, capsys, raw, "retrieval.pool", "no .tar shards found",
             "point retrieval.pool at unlabeled images")


def test_the_zero_shot_arm_without_a_clip_judge_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An arm the configuration cannot make (zero_shot needs the CLIP judge) is refused when
    the definitions are built, before any step."""
    raw = tiny_params(tmp_path, **ONE_THREAD, classifiers={"arms": ["real", "zero_shot"]})
    _refused(tmp_path, capsys, raw, "classifiers.arms lists zero_shot",
             "needs judge.backend: clip")
