"""The report: every file written, self-contained HTML, user text escaped, tables well-formed."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from synthfactory.ops.evaluation.grids import image_grid
from synthfactory.ops.report.document import write_report
from synthfactory.ops.report.tables import arm_table_markdown

NASTY = ['<b>a|b & "c"</b>', "../x", "über cat"]


def _metrics(arms: tuple[str, ...] = ("real", "synthetic", "filtered", "distilled")) -> dict:
    rows = {arm: {"n_train": 10 + i, "accuracy_mean": 0.9 - 0.1 * i, "accuracy_std": 0.01,
                  "seeds": 3, "accuracies": [0.9, 0.91, 0.89],
                  "per_class_accuracy": [0.9, 0.8, 0.7],
                  "confusion": [[9, 1, 0], [1, 8, 1], [0, 3, 7]]} for i, arm in enumerate(arms)}
    return {"dataset": "digits", "classes": NASTY, "n_test": 30, "arms": rows,
            "filter": {"total": 12, "kept": 9, "kept_fraction": 0.75, "judge_agreement": 0.9,
                       "reasons": {"low_confidence": 3},
                       "per_class": {name: {"total": 4, "kept": 3, "pass_rate": 0.75,
                                            "mean_confidence": 0.8} for name in NASTY}},
            "distillation": {"method": "dm", "ipc": 2},
            "lineage": {"params_digest": "abc", "shard_digests": {"shard-00000.tar": "f00"}}}


def _grids() -> dict[str, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 255, (9, 8, 8, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 3)
    return {name: image_grid(images, labels, NASTY, per_class=4)
            for name in ("real", "synthetic", "kept", "rejected", "distilled")}


def test_every_file_is_written_and_metrics_round_trip(tmp_path: Path) -> None:
    metrics = _metrics()
    written = write_report(tmp_path, metrics, _grids())
    for name in ["metrics.json", "report.md", "report.html", "accuracy.png", "per_class.png",
                 "confusion_real.png", "confusion_distilled.png", "grid_kept.png",
                 "grid_rejected.png"]:
        assert written[name].is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for name in ["accuracy.png", "per_class.png", "confusion_real.png", "grid_real.png"]:
        Image.open(io.BytesIO((tmp_path / name).read_bytes())).verify()


def test_html_is_self_contained_and_escapes_class_names(tmp_path: Path) -> None:
    write_report(tmp_path, _metrics(), _grids())
    page = (tmp_path / "report.html").read_text()
    assert "<b>a|b" not in page and "&lt;b&gt;a|b &amp; &quot;c&quot;&lt;/b&gt;" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "über cat" in page


def test_markdown_tables_have_consistent_columns(tmp_path: Path) -> None:
    write_report(tmp_path, _metrics(), _grids())
    for block in (tmp_path / "report.md").read_text().split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            counts = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
            assert len(counts) == 1, rows


def test_arm_table_handles_missing_arms() -> None:
    table = arm_table_markdown(_metrics(arms=("synthetic", "distilled")))
    assert "| synthetic |" in table and "| real |" not in table
    assert arm_table_markdown(_metrics()).count("\n") == 5


def test_image_grid_shapes_for_grey_rgb_and_missing_images() -> None:
    grey = np.zeros((2, 8, 8, 1), np.uint8)
    grid = image_grid(grey, np.array([0, 0]), ["a", "b"], per_class=3, scale=4)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    assert (grid[36:68, 2:34] == 96).all()  # class "b" has no image: grey cell
    rgb = np.full((1, 16, 16, 3), 200, np.uint8)
    assert image_grid(rgb, np.array([0]), ["a"], per_class=1).shape[2] == 3


def test_a_class_without_test_images_says_so_instead_of_zero(tmp_path: Path) -> None:
    metrics = _metrics()
    for row in metrics["arms"].values():
        row["per_class_accuracy"] = [0.9, None, 0.0]  # class 1 untested, class 2 always missed
    write_report(tmp_path, metrics, _grids())
    assert json.loads((tmp_path / "metrics.json").read_text())["arms"]["real"][
        "per_class_accuracy"] == [0.9, None, 0.0]
    report = (tmp_path / "report.md").read_text()
    section = report[report.index("## Per-class accuracy"):].split("\n## ")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines()
            if line.startswith("| ") and " | " in line}
    assert "no test images" in rows["../x"] and "0.000" not in rows["../x"]
    assert "0.000" in rows["über cat"] and "no test images" not in rows["über cat"]
    assert "no test images" in (tmp_path / "report.html").read_text()
    Image.open(io.BytesIO((tmp_path / "per_class.png").read_bytes())).verify()
