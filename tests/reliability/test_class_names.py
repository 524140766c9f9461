"""Class names that are not safe file names never become paths, and still reach the report.

Folder names can hold spaces, unicode, markup, leading dashes and backslashes; other sources
(a WebDataset's labels) can hold `../x` or `a/b`. Class names are data: no output path is built
from them, and the report shows them (escaped) exactly as given.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from synthfactory.cli import main
from synthfactory.definitions import build_definitions
from synthfactory.ops.data.images import RealDataset
from synthfactory.ops.data.prompts import expand_prompts, read_prompts, write_prompts
from synthfactory.ops.data.real_images import read_classes, write_real_images
from synthfactory.ops.data.splits import stratified_split
from synthfactory.ops.report.document import write_report
from synthfactory.params import parse_params
from synthfactory.planning import materialize_plan
from tests.support import assert_one_error_line, tiny_params

FOLDER_NAMES = ["two words", "ünïcödé ✓", "<em>bold & co", "x..y", "-rf", "back\\slash",
                "pipe|name"]
PATH_NAMES = ["../x", "a/b", "..x", "/etc/passwd", "..", "nul\u200bwidth", "C:\\temp"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _params(root: Path, **overrides: dict) -> dict:
    return tiny_params(root, real_images={"source": "imagefolder", "root": str(root / "photos")},
                       prompts={"templates": ["a photo of {name}"], "images_per_class": 6},
                       **overrides)


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole tiny graph on an image folder whose class folders have awkward names."""
    root = tmp_path_factory.mktemp("names")
    noise = np.random.default_rng(0)
    for index, name in enumerate(FOLDER_NAMES):
        folder = root / "photos" / name
        folder.mkdir(parents=True)
        for image in range(6):
            pixels = noise.integers(0, 40, (12, 12, 3), dtype=np.uint8)
            pixels[index % 12, :, index % 3] = 250  # a class-specific stripe
            Image.fromarray(pixels).save(folder / f"{image}.png")
    config = parse_params(_params(root))
    assert materialize_plan(build_definitions(config)).success
    return root


def test_awkward_names_round_trip_to_every_output(graph: Path) -> None:
    names = sorted(FOLDER_NAMES)  # folder listing order is the label order
    assert read_classes(graph / "data" / "real_images") == names
    records = read_prompts(graph / "data" / "prompts" / "prompts.jsonl")
    assert {r.class_name for r in records} == set(names)
    assert {r.text for r in records} == {f"a photo of {name}" for name in names}
    metrics = json.loads((graph / "reports" / "eval" / "metrics.json").read_text())
    assert metrics["classes"] == names
    assert set(metrics["filter"]["per_class"]) == set(names)
    markdown = (graph / "reports" / "eval" / "report.md").read_text()
    page = (graph / "reports" / "eval" / "report.html").read_text()
    for name in names:
        assert name.replace("|", "\\|") in markdown
        assert html.escape(name) in page
    assert "<em>bold" not in page  # markup in a class name is shown, never rendered


def test_nothing_is_written_outside_the_store_and_the_report(graph: Path) -> None:
    outside = {p for p in _files(graph)
               if p.relative_to(graph).parts[0] not in {"data", "reports", "photos"}}
    assert outside == set()
    # Output paths are fixed names: none is built from a class name.
    for path in _files(graph / "data") | _files(graph / "reports"):
        assert not any(name in path.as_posix() for name in ("two words", "ünïcödé", "<em>"))


def test_path_like_names_stay_data(graph: Path, tmp_path: Path) -> None:
    # Names a user-supplied WebDataset could carry: they are labels, never path components.
    store = tmp_path / "store"
    store.mkdir()
    labels = np.repeat(np.arange(len(PATH_NAMES)), 3)
    dataset = RealDataset(images=np.zeros((len(labels), 8, 8, 1), np.uint8), labels=labels,
                          class_names=list(PATH_NAMES), sources=[f"x{i}" for i in range(len(labels))])
    train, test = stratified_split(labels, 0.3, seed=0)
    write_real_images(store / "real_images", dataset, {"train": train, "test": test},
                      shard_size=100, info={})
    records = expand_prompts(PATH_NAMES, 2, ["{name}"], [1.0], "", 0)
    write_prompts(store / "prompts.jsonl", records)
    metrics = json.loads((graph / "reports" / "eval" / "metrics.json").read_text())
    metrics["classes"] = list(PATH_NAMES)
    report = tmp_path / "store" / "report"
    report.mkdir()
    write_report(report, metrics, grids={})
    assert {p.parent for p in _files(tmp_path)} <= {store, store / "real_images", report}
    assert read_classes(store / "real_images") == list(PATH_NAMES)
    assert [r.class_name for r in read_prompts(store / "prompts.jsonl")][:len(PATH_NAMES)] == \
        list(PATH_NAMES)
    page = (report / "report.html").read_text()
    assert all(html.escape(name) in page for name in PATH_NAMES)
    assert json.loads((report / "metrics.json").read_text())["classes"] == list(PATH_NAMES)


def test_ipc_above_what_the_filter_can_keep_exits_2_before_any_work(
        graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The filter keeps at most the top half of each class's 6 images (3); ask for 5 per class.
    # Known from the params alone, so it is refused up front (a class that keeps fewer than ipc
    # for reasons only the run can know degrades instead: tests/reliability/test_imperfect_inputs.py).
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(graph, distilled_set={"methods": ["random"],
                                                                   "ipcs": [5]})))
    before = (graph / "data" / "distilled_set" / "distilled-00000.tar").read_bytes()
    assert main(["run", "--params", str(params), "--select", "distilled_set"]) == 2
    line = assert_one_error_line(capsys.readouterr().err)
    assert re.search(r"prompts.images_per_class = 6 leaves a class at most 3 images after "
                     r"filtered_set.top_fraction = 0.5, fewer than distilled_set.ipcs 5 "
                     r"\(source filtered\)", line)
    assert "raise prompts.images_per_class to at least 10 or lower the ipcs to 3" in line
    assert (graph / "data" / "distilled_set" / "distilled-00000.tar").read_bytes() == before
