"""The evaluation report: metrics.json, report.md, a self-contained report.html, and plots.

Plots use matplotlib's Agg backend, imported inside the functions that draw so that importing
this module stays cheap. Every user-provided string (class names) is escaped for HTML and
markdown.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthfactory.ops.storage.atomic import dumps_json

ARM_ORDER = ("real", "synthetic", "filtered", "distilled")
GRID_BACKGROUND = 96  # grey for empty cells and separators
ARMS_CSV = "arms.csv"  # the arm table as plot data (dvc.yaml declares it as a plot)


def image_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], *,
               per_class: int = 8, scale: int | None = None) -> np.ndarray:
    """An RGB mosaic, one row per class with its first `per_class` images (grey when missing).

    Small images are upscaled by nearest neighbour (a cell is at least ~48 px) so they can be
    seen; cells are separated by 2 px.
    """
    if images.ndim != 4:
        raise ValueError(f"expected N×H×W×C images, got shape {images.shape}")
    height, width = images.shape[1:3]
    scale = scale or max(1, 48 // max(height, width))
    cell_h, cell_w, gap = height * scale, width * scale, 2
    rows, cols = len(class_names), per_class
    canvas = np.full((rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3),
                     GRID_BACKGROUND, np.uint8)
    for row in range(rows):
        members = np.flatnonzero(labels == row)[:per_class]
        for col, index in enumerate(members):
            image = images[index]
            image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            image = image.repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = gap + row * (cell_h + gap), gap + col * (cell_w + gap)
            canvas[top:top + cell_h, left:left + cell_w] = image
    return canvas


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _arms(metrics: dict[str, Any]) -> list[str]:
    return [arm for arm in ARM_ORDER if arm in metrics["arms"]] + sorted(
        set(metrics["arms"]) - set(ARM_ORDER))


def _figure_png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    # Drop the software version from the PNG so the same figure gives the same bytes.
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight",
                   metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_plot(metrics: dict[str, Any]) -> bytes:
    """PNG bar chart of accuracy (mean ± std over seeds) per arm, values written on the bars."""
    plt = _pyplot()
    arms = _arms(metrics)
    means = [metrics["arms"][arm]["accuracy_mean"] for arm in arms]
    stds = [metrics["arms"][arm]["accuracy_std"] for arm in arms]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bars = axis.bar(arms, means, yerr=stds, capsize=4,
                    color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(arms)])
    for bar, mean in zip(bars, means, strict=True):
        # Inside the bar, clear of the error bar above it.
        axis.text(bar.get_x() + bar.get_width() / 2, max(mean - 0.08, 0.02), f"{mean:.3f}",
                  ha="center", fontsize=9, color="white", fontweight="bold")
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy on real test images")
    axis.set_title(f"{metrics['dataset']}: accuracy per arm")
    return _figure_png(figure)


def per_class_plot(metrics: dict[str, Any]) -> bytes:
    """PNG grouped bars of per-class accuracy, one colour per arm."""
    plt = _pyplot()
    arms, classes = _arms(metrics), metrics["classes"]
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * len(classes) * max(1, len(arms)) / 2), 3.5))
    width = 0.8 / max(1, len(arms))
    positions = np.arange(len(classes))
    for offset, arm in enumerate(arms):
        axis.bar(positions + offset * width, metrics["arms"][arm]["per_class_accuracy"],
                 width=width, label=arm)
    axis.set_xticks(positions + width * (len(arms) - 1) / 2)
    axis.set_xticklabels(classes, rotation=45 if len(classes) > 10 else 0, ha="right"
                         if len(classes) > 10 else "center")
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=8, ncols=len(arms))
    axis.set_title("per-class accuracy")
    return _figure_png(figure)


def confusion_plot(matrix: np.ndarray, class_names: list[str], title: str) -> bytes:
    """PNG heatmap of a row-normalised confusion matrix (counts written when ≤ 20 classes)."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(12, 2 + 0.45 * len(class_names))
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    if len(class_names) <= 20:
        for row in range(len(class_names)):
            for col in range(len(class_names)):
                if matrix[row, col]:
                    axis.text(col, row, str(matrix[row, col]), ha="center", va="center",
                              fontsize=7, color="white" if rates[row, col] > 0.5 else "black")
    return _figure_png(figure)


def arm_table_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: arm, n_train, accuracy_mean, accuracy_std, seeds."""
    return [{"arm": arm, **{key: metrics["arms"][arm][key] for key in
                            ("n_train", "accuracy_mean", "accuracy_std", "seeds")}}
            for arm in _arms(metrics)]


def _md(text: Any) -> str:
    """A markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def arm_table_csv(metrics: dict[str, Any]) -> str:
    """The arm table as CSV (arm, n_train, accuracy_mean, accuracy_std, seeds): DVC's plot data."""
    columns = ["arm", "n_train", "accuracy_mean", "accuracy_std", "seeds"]
    rows = [",".join(columns)] + [",".join(str(row[c]) for c in columns)
                                  for row in arm_table_rows(metrics)]
    return "\n".join(rows) + "\n"


def arm_table_markdown(metrics: dict[str, Any]) -> str:
    """Markdown table: arm | n_train | accuracy (mean ± std) | seeds | Δ vs real."""
    real = metrics["arms"].get("real", {}).get("accuracy_mean")
    lines = ["| arm | n_train | accuracy (mean ± std) | seeds | Δ vs real |",
             "|---|---:|---:|---:|---:|"]
    for row in arm_table_rows(metrics):
        delta = "" if real is None else f"{row['accuracy_mean'] - real:+.4f}"
        lines.append(f"| {row['arm']} | {row['n_train']} | {row['accuracy_mean']:.4f} ± "
                     f"{row['accuracy_std']:.4f} | {row['seeds']} | {delta} |")
    return "\n".join(lines)


def _per_class_markdown(metrics: dict[str, Any]) -> str:
    arms = _arms(metrics)
    lines = ["| class | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for index, name in enumerate(metrics["classes"]):
        cells = [f"{metrics['arms'][arm]['per_class_accuracy'][index]:.3f}" for arm in arms]
        lines.append(f"| {_md(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _filter_markdown(summary: dict[str, Any]) -> str:
    lines = [f"Kept {summary['kept']} of {summary['total']} synthetic images "
             f"({summary['kept_fraction']:.1%}).", ""]
    if summary.get("judge_agreement") is not None:
        lines += [f"The judge labels {summary['judge_agreement']:.1%} of the generated images "
                  "as their prompt's class.", ""]
    reasons = summary.get("reasons", {})
    if reasons:
        lines += ["| rejection reason | count |", "|---|---:|"]
        lines += [f"| {_md(reason)} | {count} |" for reason, count in reasons.items()]
        lines.append("")
    lines += ["| class | kept | total | pass rate | mean confidence |", "|---|---:|---:|---:|---:|"]
    for name, row in summary.get("per_class", {}).items():
        lines.append(f"| {_md(name)} | {row['kept']} | {row['total']} | {row['pass_rate']:.2f} | "
                     f"{row['mean_confidence']:.3f} |")
    return "\n".join(lines)


def write_report(directory: Path, metrics: dict[str, Any], grids: dict[str, np.ndarray],
                 confusions: dict[str, np.ndarray] | None = None) -> dict[str, Path]:
    """Write metrics.json, the plots, the grids, report.md and a self-contained report.html."""
    files: dict[str, bytes] = {
        "accuracy.png": accuracy_plot(metrics),
        "per_class.png": per_class_plot(metrics),
    }
    for arm in _arms(metrics):
        matrix = (confusions or {}).get(arm, metrics["arms"][arm].get("confusion"))
        if matrix is not None:
            files[f"confusion_{arm}.png"] = confusion_plot(np.asarray(matrix), metrics["classes"],
                                                           f"{arm}: confusion (rows: true)")
    for name, grid in grids.items():
        files[f"grid_{name}.png"] = png_bytes(grid)
    written = {}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        written[name] = directory / name
    (directory / "metrics.json").write_text(dumps_json(metrics))
    (directory / ARMS_CSV).write_text(arm_table_csv(metrics))
    (directory / "report.md").write_text(_markdown(metrics, files))
    (directory / "report.html").write_text(_html(metrics, files))
    for name in ("metrics.json", ARMS_CSV, "report.md", "report.html"):
        written[name] = directory / name
    return written


def _markdown(metrics: dict[str, Any], files: dict[str, bytes]) -> str:
    distillation = metrics.get("distillation", {})
    parts = [
        f"# synthfactory evaluation: {_md(metrics['dataset'])}",
        "",
        "How good is synthetic data for these classes, and what did each step add? Every arm "
        "trains the same ConvNet from scratch and is tested on the same real held-out images "
        f"({metrics.get('n_test', '?')} of them).",
        "",
        arm_table_markdown(metrics), "", "![accuracy per arm](accuracy.png)", "",
        "## Per-class accuracy", "", _per_class_markdown(metrics), "",
        "![per-class accuracy](per_class.png)", "",
    ]
    if "filter" in metrics:
        parts += ["## Filtering", "", _filter_markdown(metrics["filter"]), ""]
    if distillation:
        parts += ["## Distillation", "",
                  f"Method `{distillation.get('method')}`, {distillation.get('ipc')} images per "
                  f"class, {distillation.get('labels', 'hard')} labels.", ""]
    parts += ["## Confusion matrices", ""]
    parts += [f"![{name}]({name})" for name in files if name.startswith("confusion_")]
    parts += ["", "## Images (one row per class, in class order)", ""]
    for name in files:
        if name.startswith("grid_"):
            parts += [f"### {name[5:-4]}", "", f"![{name}]({name})", ""]
    parts += ["## Lineage", "", "| what | value |", "|---|---|"]
    for key, value in metrics.get("lineage", {}).items():
        shown = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) \
            else value
        parts.append(f"| {_md(key)} | {_md(shown)} |")
    return "\n".join(parts) + "\n"


def _img(files: dict[str, bytes], name: str, alt: str) -> str:
    data = base64.b64encode(files[name]).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) +
                   "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(metrics: dict[str, Any], files: dict[str, bytes]) -> str:
    arms = _arms(metrics)
    real = metrics["arms"].get("real", {}).get("accuracy_mean")
    arm_rows = [[row["arm"], row["n_train"],
                 f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}", row["seeds"],
                 "" if real is None else f"{row['accuracy_mean'] - real:+.4f}"]
                for row in arm_table_rows(metrics)]
    per_class_rows = [[name] + [f"{metrics['arms'][arm]['per_class_accuracy'][i]:.3f}"
                                for arm in arms] for i, name in enumerate(metrics["classes"])]
    sections = [
        f"<h1>synthfactory evaluation: {html.escape(str(metrics['dataset']))}</h1>",
        "<p>Every arm trains the same ConvNet from scratch and is tested on the same "
        f"{metrics.get('n_test', '?')} real held-out images.</p>",
        _html_table(["arm", "n_train", "accuracy (mean ± std)", "seeds", "Δ vs real"], arm_rows),
        _img(files, "accuracy.png", "accuracy per arm"),
        "<h2>Per-class accuracy</h2>", _html_table(["class", *arms], per_class_rows),
        _img(files, "per_class.png", "per-class accuracy"),
    ]
    summary = metrics.get("filter")
    if summary:
        reason_rows = [[reason, count] for reason, count in summary.get("reasons", {}).items()]
        class_rows = [[name, row["kept"], row["total"], f"{row['pass_rate']:.2f}",
                       f"{row['mean_confidence']:.3f}"]
                      for name, row in summary.get("per_class", {}).items()]
        agreement = summary.get("judge_agreement")
        sections += [
            "<h2>Filtering</h2>",
            f"<p>Kept {summary['kept']} of {summary['total']} synthetic images "
            f"({summary['kept_fraction']:.1%}).</p>",
            "" if agreement is None else f"<p>The judge labels {agreement:.1%} of the generated "
                                         "images as their prompt's class.</p>",
            _html_table(["rejection reason", "count"], reason_rows),
            _html_table(["class", "kept", "total", "pass rate", "mean confidence"], class_rows)]
    distillation = metrics.get("distillation")
    if distillation:
        sections.append(f"<h2>Distillation</h2><p>Method {html.escape(str(distillation.get('method')))}"
                        f", {html.escape(str(distillation.get('ipc')))} images per class, "
                        f"{html.escape(str(distillation.get('labels', 'hard')))} labels.</p>")
    sections.append("<h2>Confusion matrices</h2>")
    sections += [_img(files, name, name[:-4]) for name in files if name.startswith("confusion_")]
    sections.append("<h2>Images</h2><p>One row per class, in this order.</p>")
    labels = "".join(f"<li>{html.escape(name)}</li>" for name in metrics["classes"])
    for name in files:
        if name.startswith("grid_"):
            sections.append(f'<div class="grid"><h3>{html.escape(name[5:-4])}</h3>'
                            f'<ol class="classes" start="0">{labels}</ol>'
                            f"{_img(files, name, name[5:-4])}</div>")
    lineage_rows = [[key, ", ".join(f"{k}: {v}" for k, v in value.items())
                     if isinstance(value, dict) else value]
                    for key, value in metrics.get("lineage", {}).items()]
    sections += ["<h2>Lineage</h2>", _html_table(["what", "value"], lineage_rows)]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%;display:block;margin:1em 0}.grid{display:inline-block;"
             "vertical-align:top;margin-right:2em}.classes{font-size:12px}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>synthfactory report</title><style>{style}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")
