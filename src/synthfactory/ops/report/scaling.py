"""The scaling curve in the report: the plot (log axis, the real arm as a line, the fitted power
law) and a section with the points, the fit and the real-equivalent."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import Figure, Paragraph, ReportSection, Table
from synthfactory.ops.report.plots import figure_png, pyplot

SCALING_PNG = "scaling.png"


def scaling_plot(scaling: dict[str, Any], real: dict[str, Any] | None, title: str) -> bytes:
    """PNG: accuracy (mean ± std) against synthetic images per class on a log axis, the fitted
    power law, the real arm as a horizontal line (± std band) and the real-equivalent."""
    plt = pyplot()
    points = scaling["points"]
    sizes = np.asarray([p["images_per_class"] for p in points])
    figure, axis = plt.subplots(figsize=(6, 3.8))
    axis.errorbar(sizes, [p["accuracy_mean"] for p in points],
                  yerr=[p["accuracy_std"] for p in points], fmt="o", capsize=4,
                  color="#dd8452", label="filtered synthetic (mean ± std)")
    fit = scaling["fit"]
    equivalent = (scaling["real_equivalent"] or {}).get("images_per_class")
    right = max(sizes.max(), equivalent or 0) * 1.5
    curve = np.geomspace(sizes.min() / 1.5, right, 200)
    axis.plot(curve, 1 - (fit["a"] * curve ** -fit["b"] + fit["c"]), "-", color="#dd8452",
              alpha=0.7, label=f"fit: error = {fit['a']:.3g}·N^-{fit['b']:.3g} + {fit['c']:.3g}")
    if real is not None:
        mean, std = real["accuracy_mean"], real["accuracy_std"]
        axis.axhline(mean, color="#4c72b0", label=f"real arm ({mean:.4f})")
        axis.axhspan(mean - std, mean + std, color="#4c72b0", alpha=0.15)
    if equivalent is not None:
        axis.axvline(equivalent, color="grey", linestyle=":",
                     label=f"real-equivalent ≈ {equivalent:.3g} per class")
    axis.set_xscale("log")
    axis.set_xlabel("synthetic images per class")
    axis.set_ylabel("accuracy on real test images")
    lowest = min(p["accuracy_mean"] - p["accuracy_std"] for p in points)
    axis.set_ylim(max(0.0, lowest - 0.05), 1.0)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(title)
    return figure_png(figure)


def scaling_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection | None:
    """Accuracy against synthetic images per class, the power law and the real-equivalent."""
    scaling = metrics.get("scaling")
    if not scaling:
        return None
    if "not_built" in scaling:  # its data ran out: say so where the curve would be
        return ReportSection(f"{metrics['dataset']}: scaling of synthetic images",
                             [Paragraph(f"No scaling curve: {scaling['not_built']}.")])
    real = metrics["arms"].get("real")
    rows = [[f"{p['fraction']:g}" if p.get("fraction") is not None else "",
             f"{p['images_per_class']:.1f}",
             f"{p['accuracy_mean']:.4f} ± {p['accuracy_std']:.4f}"] for p in scaling["points"]]
    fit, interval = scaling["fit"], scaling["fit_interval_95"]
    equivalent = scaling["real_equivalent"]
    blocks = [Paragraph("How accuracy grows with the number of synthetic images: nested, seeded "
                        "subsets of each class's filtered images, each trained with every "
                        "classifier seed."),
              Table(["fraction", "images per class", "test accuracy (mean ± std)"], rows),
              Paragraph(f"Power law error = a·N^(-b) + c: a = {fit['a']:.4g} "
                        f"[{interval['a'][0]:.4g}, {interval['a'][1]:.4g}], b = {fit['b']:.4g} "
                        f"[{interval['b'][0]:.4g}, {interval['b'][1]:.4g}], c = {fit['c']:.4g} "
                        f"[{interval['c'][0]:.4g}, {interval['c'][1]:.4g}] (95% bootstrap "
                        "intervals over the classifier seeds)."),
              Paragraph("Real-equivalent: none computed (no real arm to match)."
                        if equivalent is None else real_equivalent_text(equivalent)),
              Figure(SCALING_PNG, "accuracy against synthetic images per class")]
    title = f"{metrics['dataset']}: scaling of synthetic images"
    return ReportSection("Scaling", blocks,
                         files={SCALING_PNG: scaling_plot(scaling, real, title)})


def real_equivalent_text(equivalent: dict[str, Any]) -> str:
    """One sentence: how many synthetic images per class match the real arm, and how sure."""
    real = (f"the real arm ({equivalent['real_accuracy']:.4f}, "
            f"{equivalent['real_images_per_class']:.1f} real images per class)")
    low, high = equivalent["interval_95"]
    span = (f"95% interval [{'—' if low is None else f'{low:.3g}'}, "
            f"{'unbounded' if high is None else f'{high:.3g}'}]")
    share = equivalent["unreachable_fraction"]
    never = f"; {share:.0%} of the resamples never reach it" if share else ""
    if equivalent["how"] == "measured":
        return (f"Real-equivalent: about {equivalent['images_per_class']:.3g} synthetic images "
                f"per class reach {real} — measured ({span}{never}).")
    if equivalent["how"] == "extrapolated":
        return (f"Real-equivalent: no measured point reaches {real}; the fit extrapolates to "
                f"about {equivalent['images_per_class']:.3g} synthetic images per class "
                f"({span}{never}).")
    return (f"Real-equivalent: none — the fitted floor c is at or above the error of {real}, so "
            f"more images of this recipe are not expected to reach it ({span}{never}).")
