"""Export a distilled set for other tools: an image folder or one `.npz`, with its card.

The float32 learned images are the source of truth; exports are uint8 (the model space
x ∈ [-1, 1] ↔ uint8 = round((x + 1) · 127.5), values outside [-1, 1] clipped) and say how many
pixels were clipped, so a user knows what the rounding lost.

Beside the images, `card.json` says what the set is and how it was measured — method, its
settings, source, the share of the reference implementation's budget that ran, soft labels or
not, the exact evaluation config, and the accuracy it reached with its interval (the report's
row, when the report exists) — so that a released set reproduces; `load_export` reads the set
and its card back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthfactory.ops.distillation.cells import parse_cell

FORMATS = ("imagefolder", "npz")
CARD_JSON = "card.json"


@dataclass(frozen=True)
class ExportedSet:
    """A set `export_distilled` wrote, read back: uint8 N×H×W×C images, labels, soft labels
    (or None), class names and the card."""

    images: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray | None
    class_names: list[str]
    card: dict[str, Any]


def to_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    """float32 N×C×H×W model space → uint8 N×H×W×C (clipped to [-1, 1], rounded)."""
    scaled = np.clip(images, -1.0, 1.0)
    return np.round((scaled + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def export_distilled(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                     directory: Path, fmt: str, soft_labels: np.ndarray | None = None,
                     info: dict | None = None, card: dict[str, Any] | None = None) -> dict:
    """Write `directory` as `imagefolder` (PNG class folders + labels.json) or `npz`, and
    `card.json` (`card`: what the set is and how it was measured; see the module docstring).

    Class folders are numbered (`000_<name>`-free: the folder is the class index) so that any
    class name — spaces, slashes, unicode — is data in labels.json, never a path.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    pixels = to_uint8_nhwc(images)
    clipped = float(np.mean(np.abs(images) > 1.0))
    directory.mkdir(parents=True, exist_ok=True)
    summary = {"format": fmt, "count": int(len(pixels)), "classes": class_names,
               "pixels_clipped_fraction": round(clipped, 6),
               "normalisation": "uint8 = round((x + 1) * 127.5), x the float32 model-space value",
               **(info or {})}
    if fmt == "npz":
        arrays = {"images": pixels, "labels": labels.astype(np.int64)}
        if soft_labels is not None:
            arrays["soft_labels"] = soft_labels.astype(np.float32)
        np.savez(directory / "distilled.npz", **arrays)
        summary["files"] = ["distilled.npz"]
    else:
        entries = []
        for index, (pixel, label) in enumerate(zip(pixels, labels, strict=True)):
            folder = directory / f"{int(label):03d}"
            folder.mkdir(exist_ok=True)
            name = f"{int(label):03d}/{index:05d}.png"
            image = pixel[:, :, 0] if pixel.shape[2] == 1 else pixel
            Image.fromarray(image).save(directory / name)
            entry = {"file": name, "label": int(label), "class": class_names[int(label)]}
            if soft_labels is not None:
                entry["soft_label"] = [round(float(v), 6) for v in soft_labels[index]]
            entries.append(entry)
        (directory / "labels.json").write_text(json.dumps(entries, indent=1))
        summary["files"] = ["labels.json"] + [entry["file"] for entry in entries]
    (directory / "export.json").write_text(json.dumps({k: v for k, v in summary.items()
                                                       if k != "files"}, indent=1))
    (directory / CARD_JSON).write_text(json.dumps({
        **(card or {}), "format": fmt, "count": summary["count"], "classes": class_names,
        "normalisation": summary["normalisation"],
        "pixels_clipped_fraction": summary["pixels_clipped_fraction"]}, indent=1))
    return summary


def load_export(directory: Path) -> ExportedSet:
    """A set `export_distilled` wrote (either format), with its card."""
    card_path = directory / CARD_JSON
    if not card_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {CARD_JSON}: not a set exported by "
                                "`synthfactory export distilled_set`")
    card = json.loads(card_path.read_text())
    if card["format"] == "npz":
        with np.load(directory / "distilled.npz") as arrays:
            soft = arrays["soft_labels"] if "soft_labels" in arrays else None
            return ExportedSet(arrays["images"], arrays["labels"], soft, card["classes"], card)
    entries = json.loads((directory / "labels.json").read_text())
    images = []
    for entry in entries:
        pixel = np.asarray(Image.open(directory / entry["file"]), dtype=np.uint8)
        images.append(pixel[:, :, None] if pixel.ndim == 2 else pixel)
    soft_rows = [entry.get("soft_label") for entry in entries]
    soft = (np.asarray(soft_rows, np.float32) if soft_rows and all(r is not None for r in soft_rows)
            else None)
    return ExportedSet(np.stack(images), np.array([entry["label"] for entry in entries]), soft,
                       card["classes"], card)


def export_card(key: str, repeat: int, record: dict[str, Any] | None, soft_labels: bool, *,
                evaluation: dict[str, Any], metrics_path: Path) -> dict[str, Any]:
    """The card of an exported cell: what its cell.json records (`record`), the evaluation
    config that measures it and, when the report at `metrics_path` exists, that cell's rows of
    its distillation table (accuracy with the 95% interval)."""
    measured = None
    if metrics_path.is_file():
        cell = parse_cell(key)
        measured = [{field: row.get(field) for field in ("architecture", "accuracy_mean",
                                                          "accuracy_std", "ci95", "n_models",
                                                          "repeats")}
                    for row in json.loads(metrics_path.read_text()).get("distillation_table", [])
                    if (row["method"], row["ipc"], row["source"])
                    == (cell.method, cell.ipc, cell.source)]
    record = record or {}
    return {"cell": key, "repeat": repeat, "method": record.get("method"),
            "ipc": record.get("ipc"), "source": record.get("source"),
            "settings": record.get("settings"), "budget_fraction": record.get("budget_fraction"),
            "soft_labels": soft_labels, "evaluation": evaluation,
            "measured_on_test": measured or None,
            "measured_note": ("the report's accuracy of this cell's evaluation networks on the "
                              "real test split (mean ± std over repeats × networks, 95% "
                              "interval)" if measured else
                              f"no report at {metrics_path}: run eval_report to measure it")}
