"""The scaling curves in the report: accuracy against images per class for nested subsets of the
filtered synthetic set and of the real train split, each with 95% intervals, each curve's power
law where it has the residual degrees of freedom, and the exchange rate between them (how many
real images per class the synthetic set is worth), from `ops/evaluation/scaling.py`."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import Block, Figure, Paragraph, ReportSection, Table
from synthfactory.ops.report.plots import figure_png, pyplot

SCALING_PNG = "scaling.png"
CURVES = (("filtered synthetic", None, "#dd8452"), ("real", "real_curve", "#4c72b0"))


def _curve(scaling: dict[str, Any], key: str | None) -> dict[str, Any] | None:
    """The synthetic curve (the top level of `scaling`) or the real one (`real_curve`)."""
    return scaling if key is None else scaling.get(key)


def scaling_plot(scaling: dict[str, Any], title: str) -> bytes:
    """PNG: both curves' accuracy with 95% intervals on a log axis of images per class, and each
    fitted power law where the curve has the degrees of freedom for one."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.8))
    lowest = 1.0
    for label, key, colour in CURVES:
        curve = _curve(scaling, key)
        if not curve:
            continue
        sizes = np.asarray([p["images_per_class"] for p in curve["points"]])
        means = np.asarray([p["accuracy"] for p in curve["points"]])
        lows = np.asarray([p["ci95"][0] for p in curve["points"]])
        highs = np.asarray([p["ci95"][1] for p in curve["points"]])
        axis.errorbar(sizes, means, yerr=[means - lows, highs - means], fmt="o", capsize=4,
                      color=colour, label=f"{label} (95% interval)")
        lowest = min(lowest, float(lows.min()))
        fit = curve.get("fit")
        if fit is not None:
            grid = np.geomspace(sizes.min() / 1.2, sizes.max() * 1.5, 200)
            axis.plot(grid, 1 - (fit["a"] * grid ** -fit["b"] + fit["c"]), "-", color=colour,
                      alpha=0.6, label=f"{label} fit (R² {curve['gof']['r2']:.3f})")
    axis.set_xscale("log")
    axis.set_xlabel("images per class")
    axis.set_ylabel("accuracy on real test images")
    axis.set_ylim(max(0.0, lowest - 0.05), 1.0)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(title)
    return figure_png(figure)


def fit_text(label: str, curve: dict[str, Any]) -> str:
    """One sentence: the curve's power law with its goodness of fit, or why there is none."""
    fit = curve.get("fit")
    if fit is None:
        return f"{label}: no power law — {curve.get('no_fit') or 'too few sizes'}."
    gof = curve["gof"]
    return (f"{label}: error = {fit['a']:.4g}·N^(-{fit['b']:.4g}) + {fit['c']:.4g} over "
            f"{len(curve['points'])} sizes ({gof['residual_dof']} residual degrees of freedom, "
            f"residual standard error {gof['rse']:.4g}, R² {gof['r2']:.4f}).")


def exchange_text(rate: dict[str, Any] | None) -> str:
    """One sentence: how many real images per class the synthetic set is worth, and how sure."""
    if rate is None:
        return "Exchange rate: none (no real curve to price the synthetic set against)."
    low, high = rate["ci95"]
    span = (f"95% interval [{'below the measured range' if low is None else f'{low:.3g}'}, "
            f"{'beyond the measured range' if high is None else f'{high:.3g}'}]")
    value = rate["real_images_per_class"]
    worth = (f"worth about {value:.3g} real images per class ({rate['how']}; {span})"
             if value is not None else f"{rate['how']} ({span})")
    return (f"Exchange rate: {rate['synthetic_images_per_class']:g} filtered synthetic images "
            f"per class (accuracy {rate['synthetic_accuracy']:.4f}) are {worth}; the real curve "
            f"was measured from {rate['measured_real_range'][0]:g} to "
            f"{rate['measured_real_range'][1]:g} images per class.")


def scaling_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection | None:
    """Accuracy against images per class for both curves, their fits and the exchange rate."""
    scaling = metrics.get("scaling")
    if not scaling:
        return None
    if "not_built" in scaling:  # its data ran out: say so where the curve would be
        return ReportSection("Scaling", [Paragraph(f"No scaling curve: {scaling['not_built']}.")])
    rows = [[label, f"{p['images_per_class']:.1f}", f"{p['accuracy']:.4f}",
             f"[{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]"]
            for label, key, _ in CURVES if (curve := _curve(scaling, key))
            for p in curve["points"]]
    blocks: list[Block] = [
        Paragraph("How accuracy grows with images per class: nested, seeded subsets of each "
                  "class's filtered synthetic images and of its real training images, every "
                  "subset trained with the compared arms' steps and seeds. Intervals resample "
                  f"{', '.join(scaling.get('covers', [])) or 'nothing'}."),
        Table(["curve", "images per class", "test accuracy", "95% interval"], rows)]
    blocks += [Paragraph(fit_text(label, curve)) for label, key, _ in CURVES
               if (curve := _curve(scaling, key))]
    blocks += [Paragraph(exchange_text(scaling.get("exchange_rate"))),
               Figure(SCALING_PNG, "accuracy against images per class, both curves")]
    title = f"{metrics['dataset']}: scaling, synthetic and real"
    return ReportSection("Scaling", blocks, files={SCALING_PNG: scaling_plot(scaling, title)})
