"""Helpers the tests share (plain functions and constants; the fixtures are in conftest.py):
the tiny params of the whole graph, and builders of small real-looking inputs."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# The repository root (tests/ is one level below it).
PROJECT_ROOT = Path(__file__).resolve().parents[1]

TINY_PARAMS: dict[str, Any] = {
    "seed": 0,
    # One thread: on a busy 2-core machine, two torch threads spin against other processes and
    # the tiny models run tens of times slower (measured: 0.09 s against 4-8 s per sampling call).
    "runtime": {"device": "cpu", "threads": 1},
    "prompts": {"images_per_class": 6, "guidance": [1.0, 2.0]},
    "generator": {"ddpm": {"widths": [16, 32], "train_steps": 30, "batch_size": 32}},
    "synthetic_shards": {"shard_size": 25, "steps": 4, "batch_size": 16},
    "judge": {"epochs": 2, "width": 16},
    # An undertrained generator makes poor digits: keep the top half of each class so every
    # class has enough samples for the distilled set.
    "filtered_set": {"threshold": None, "top_fraction": 0.5, "dedup_threshold": 0.999},
    "distilled_set": {"methods": ["dm"], "ipcs": [2], "eval_models": 2,
                      "dm": {"iterations": 10, "batch_real": 16},
                      "eval": {"epochs": 5, "width": 16}},
    "classifiers": {"n_seeds": 2, "epochs": 1, "min_steps": 10, "width": 16},
}


# Runs of the CLI in tests: CPU, one torch thread (tests run two pytest workers on 2 cores).
ONE_THREAD = {"runtime": {"device": "cpu", "threads": 1}}


def assert_one_error_line(err: str, *names: str) -> str:
    """stderr of a refused CLI run: no traceback, exactly one `synthfactory: error:` line, and
    it names every one of `names`. Returns that line."""
    assert "Traceback" not in err and "Stack Trace" not in err and 'File "' not in err, err
    lines = [line for line in err.splitlines() if line.startswith("synthfactory: error:")]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def tiny_params(root: Path, **overrides: Any) -> dict[str, Any]:
    """TINY_PARAMS with the store under `root`, sections updated by `overrides`."""
    raw = {key: (dict(value) if isinstance(value, dict) else value)
           for key, value in TINY_PARAMS.items()}
    raw["store"] = {"root": str(root / "data")}
    raw["eval_report"] = {"output_dir": str(root / "reports" / "eval")}
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    return raw


# Distinct colours per class (plus noise), so that even tiny models can tell classes apart.
CLASS_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (160, 60, 200)]


def class_images(class_id: int, count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """`count` noisy RGB images of one class's colour, uint8 size×size×3."""
    generator = np.random.default_rng([seed, class_id])
    colour = np.asarray(CLASS_COLOURS[class_id % len(CLASS_COLOURS)], dtype=np.float64)
    return [np.clip(colour + generator.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)]


def png_bytes(image: np.ndarray) -> bytes:
    """An image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file member with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_labelled_webdataset(directory: Path, class_names: Sequence[str], per_class: int, *,
                              size: int = 24, label: str = "cls", n_shards: int = 2,
                              seed: int = 0) -> Path:
    """A user's WebDataset: `n_shards` tars of `<key>.png` and a label, plus classes.txt.

    `label` is `cls` (the class index) or `json` (`{"class_name": ...}`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    samples = [(class_id, image) for class_id in range(len(class_names))
               for image in class_images(class_id, per_class, size, seed)]
    for shard in range(n_shards):
        with tarfile.open(directory / f"data-{shard:03d}.tar", "w") as tar:
            for index in range(shard, len(samples), n_shards):
                class_id, image = samples[index]
                key = f"sample{index:05d}"
                add_member(tar, f"{key}.png", png_bytes(image))
                if label == "cls":
                    add_member(tar, f"{key}.cls", str(class_id).encode())
                else:
                    add_member(tar, f"{key}.json",
                               json.dumps({"class_name": class_names[class_id]}).encode())
    (directory / "classes.txt").write_text("".join(f"{name}\n" for name in class_names))
    return directory
