"""The report's pictures: matplotlib plots and PNG encoding (the image grids themselves are
arrays made by `ops/evaluation/grids.py`).

matplotlib's Agg backend is imported inside the functions that draw, so that importing this
module stays cheap. Figures are saved without the software version, so the same figure gives
the same bytes.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from synthfactory.ops.report.tables import arm_group, ordered_arms

# One colour per group of arms in the accuracy plot.
GROUP_COLOURS = {"references": "#4c72b0", "synthetic": "#dd8452", "combined": "#55a868",
                 "other": "#8c8c8c"}


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    # Drop the software version from the PNG so the same figure gives the same bytes.
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight",
                   metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_plot(metrics: dict[str, Any]) -> bytes:
    """PNG bar chart of accuracy (mean ± std over seeds) per arm, values written on the bars."""
    plt = pyplot()
    arms = ordered_arms(metrics)
    means = [metrics["arms"][arm]["accuracy_mean"] for arm in arms]
    stds = [metrics["arms"][arm]["accuracy_std"] for arm in arms]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(arms)), 3.5))
    bars = axis.bar(arms, means, yerr=stds, capsize=4,
                    color=[GROUP_COLOURS.get(arm_group(metrics, arm), GROUP_COLOURS["other"])
                           for arm in arms])
    for bar, mean in zip(bars, means, strict=True):
        # Inside the bar, clear of the error bar above it.
        axis.text(bar.get_x() + bar.get_width() / 2, max(mean - 0.08, 0.02), f"{mean:.3f}",
                  ha="center", fontsize=9, color="white", fontweight="bold")
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy on real test images")
    axis.set_title(f"{metrics['dataset']}: accuracy per arm")
    return figure_png(figure)


def per_class_plot(metrics: dict[str, Any]) -> bytes:
    """PNG grouped bars of per-class accuracy, one colour per arm."""
    plt = pyplot()
    arms, classes = ordered_arms(metrics), metrics["classes"]
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * len(classes) * max(1, len(arms)) / 2), 3.5))
    width = 0.8 / max(1, len(arms))
    positions = np.arange(len(classes))
    for offset, arm in enumerate(arms):
        # A class without test images (None) gets no bar, not a zero-height one.
        values = [np.nan if value is None else value
                  for value in metrics["arms"][arm]["per_class_accuracy"]]
        axis.bar(positions + offset * width, values, width=width, label=arm)
    axis.set_xticks(positions + width * (len(arms) - 1) / 2)
    untested = {index for index in range(len(classes))
                if all(metrics["arms"][arm]["per_class_accuracy"][index] is None for arm in arms)}
    labels = [f"{name}\n(no test images)" if index in untested else str(name)
              for index, name in enumerate(classes)]
    axis.set_xticklabels(labels, rotation=45 if len(classes) > 10 else 0, ha="right"
                         if len(classes) > 10 else "center")
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=8, ncols=len(arms))
    axis.set_title("per-class accuracy")
    return figure_png(figure)


def confusion_plot(matrix: np.ndarray, class_names: list[str], title: str) -> bytes:
    """PNG heatmap of a row-normalised confusion matrix (counts written when ≤ 20 classes)."""
    plt = pyplot()
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
    return figure_png(figure)



VERDICT_COLOURS = {"better": "#2e7d32", "worse": "#c62828", "indistinguishable": "#616161"}


def forest_plot(comparisons: list[dict[str, Any]], title: str) -> bytes:
    """PNG forest plot: each comparison's paired difference (points) with its 95% interval,
    one row each, a line at zero; colour by verdict. Differences, not bars from zero: a bar
    chart of accuracies hides every difference of a few tenths of a point."""
    plt = pyplot()
    labels = [comparison_label(c) for c in comparisons]
    differences = [100 * c["difference"] for c in comparisons]
    lows = [100 * (c["difference"] - c["ci95"][0]) for c in comparisons]
    highs = [100 * (c["ci95"][1] - c["difference"]) for c in comparisons]
    colours = [VERDICT_COLOURS.get(c["verdict"], "#616161") for c in comparisons]
    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(comparisons) + 1.2))
    rows = list(range(len(comparisons)))[::-1]
    for row, difference, low, high, colour in zip(rows, differences, lows, highs, colours,
                                                  strict=True):
        axis.errorbar(difference, row, xerr=[[low], [high]], fmt="o", color=colour, capsize=3)
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(rows)
    axis.set_yticklabels(labels, fontsize=8)
    axis.set_xlabel("difference in test accuracy (points), 95% paired interval")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def comparison_label(comparison: dict[str, Any]) -> str:
    """`a − b` with the architecture of a distillation comparison when it is not the ConvNet."""
    architecture = comparison.get("architecture")
    suffix = f" ({architecture})" if architecture and architecture != "convnet" else ""
    return f"{comparison['a']} − {comparison['b']}{suffix}"
