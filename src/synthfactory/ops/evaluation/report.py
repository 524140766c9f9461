"""The evaluation report: metrics.json, report.md and a self-contained report.html.

A report is an ordered list of sections (`SECTIONS`); each is built from `metrics` (and the
image grids) by one function and holds blocks — paragraphs, tables, figures — that render to
both markdown and HTML, so the two never disagree. A new part of the report is one function
returning a `ReportSection` (or None when it has nothing to say), added to `SECTIONS`. Every
user-provided string (class names) is escaped for markdown tables and for HTML.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.evaluation.baselines import arms_section
from synthfactory.ops.evaluation.class_sizes import NOISE_NOTE, class_sizes_section, noise_mark
from synthfactory.ops.evaluation.contamination import contamination_section
from synthfactory.ops.evaluation.distillation_table import distillation_table_section
from synthfactory.ops.evaluation.missing import missing_arms_section
from synthfactory.ops.evaluation.plots import (accuracy_plot, confusion_plot, per_class_plot,
                                               png_bytes)
from synthfactory.ops.evaluation.refinement_report import refinement_section
from synthfactory.ops.evaluation.scaling_report import scaling_section
from synthfactory.ops.evaluation.tables import (ARMS_CSV, arm_table, arm_table_csv,
                                                markdown_table, ordered_arms)
from synthfactory.ops.storage.atomic import dumps_json

# The standard image grids, in the order the report shows them (one row per class).
GRID_NAMES = ("real", "synthetic", "kept", "rejected", "distilled")
# What the report says of a class that the test split has no image of (its accuracy is null).
NO_TEST_IMAGES = "no test images"


@dataclass(frozen=True)
class Paragraph:
    """Plain text (escaped for HTML; numbers and fixed words, no markup)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table: the first column left-aligned, the others right-aligned."""

    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Figure:
    """A PNG file of the report (its bytes are in the section's `files`), with its alt text."""

    name: str
    alt: str


Block = Paragraph | Table | Figure


@dataclass(frozen=True)
class ReportSection:
    """A titled part of the report and the PNG files it adds beside report.md."""

    title: str
    blocks: list[Block]
    files: dict[str, bytes] = field(default_factory=dict)


SectionBuilder = Callable[[dict[str, Any], dict[str, np.ndarray]], ReportSection | None]


def summary_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """The question, the arm table (grouped, Δ vs real), what the spread covers, the plot."""
    classifier = metrics.get("classifier", {})
    architecture = classifier.get("architecture")
    blocks: list[Block] = [
        Paragraph("How good is synthetic data for these classes, and what did each step add? "
                  "Every arm trains the same classifier from scratch and is tested on the same "
                  f"real held-out images ({metrics.get('n_test', '?')} of them)."),
        Table(*arm_table(metrics))]
    if metrics.get("spread"):
        blocks.append(Paragraph(f"± is the {metrics['spread']}. Validation accuracy (the real "
                                "validation split, held out of everything that learns) is what "
                                "choices read; test accuracy is the final number."))
    if architecture:
        blocks.append(Paragraph(f"Classifier: {architecture}, " + ", ".join(
            f"{key.replace('_', ' ')} {value}" for key, value in classifier.items()
            if key != "architecture") + "."))
    blocks.append(Figure("accuracy.png", "accuracy per arm"))
    title = f"synthfactory evaluation: {metrics['dataset']}"
    return ReportSection(title=title + (f" ({architecture})" if architecture else ""),
                         blocks=blocks, files={"accuracy.png": accuracy_plot(metrics)})


def per_class_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """Accuracy within each class, per arm."""
    arms = ordered_arms(metrics)
    # A class with too few test images is marked beside its numbers (noise_mark, NOISE_NOTE).
    rows = [[f"{name}{noise_mark(metrics, name)}",
             *(_accuracy_cell(metrics["arms"][arm]["per_class_accuracy"][index])
               for arm in arms)]
            for index, name in enumerate(metrics["classes"])]
    noisy = [Paragraph(NOISE_NOTE)] if any(noise_mark(metrics, n) for n in metrics["classes"]) else []
    return ReportSection("Per-class accuracy",
                         [Table(["class", *arms], rows), *noisy,
                          Figure("per_class.png", "per-class accuracy")],
                         files={"per_class.png": per_class_plot(metrics)})


def _accuracy_cell(value: float | None) -> str:
    """A per-class accuracy for a table; a class without test images has none."""
    return NO_TEST_IMAGES if value is None else f"{value:.3f}"


def filtering_section(metrics: dict[str, Any],
                      grids: dict[str, np.ndarray]) -> ReportSection | None:
    """What the filter kept, why it rejected the rest, and each class's pass rate."""
    summary = metrics.get("filter")
    if not summary:
        return None
    blocks: list[Block] = [Paragraph(f"Kept {summary['kept']} of {summary['total']} synthetic "
                                     f"images ({summary['kept_fraction']:.1%}).")]
    if summary.get("judge_agreement") is not None:
        blocks.append(Paragraph(f"The judge labels {summary['judge_agreement']:.1%} of the "
                                "generated images as their prompt's class."))
    reasons = summary.get("reasons", {})
    if reasons:
        blocks.append(Table(["rejection reason", "count"],
                            [[reason, count] for reason, count in reasons.items()]))
    blocks.append(Table(["class", "kept", "total", "pass rate", "mean confidence"],
                        [[name, row["kept"], row["total"], f"{row['pass_rate']:.2f}",
                          f"{row['mean_confidence']:.3f}"]
                         for name, row in summary.get("per_class", {}).items()]))
    return ReportSection("Filtering", blocks)


def distillation_section(metrics: dict[str, Any],
                         grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The distillation method, images per class and label kind."""
    distillation = metrics.get("distillation")
    if not distillation:
        return None
    return ReportSection("Distillation", [Paragraph(
        f"Method {distillation.get('method')}, {distillation.get('ipc')} images per class, "
        f"{distillation.get('labels', 'hard')} labels"
        + (f", from the {distillation['source']} set" if distillation.get("source") else "")
        + " (the distilled arm: the first cell of the table).")])


def confusion_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """A row-normalised confusion matrix per arm (summed over seeds)."""
    files = {f"confusion_{arm}.png": confusion_plot(np.asarray(metrics["arms"][arm]["confusion"]),
                                                    metrics["classes"],
                                                    f"{arm}: confusion (rows: true)")
             for arm in ordered_arms(metrics) if "confusion" in metrics["arms"][arm]}
    return ReportSection("Confusion matrices", [Figure(name, name[:-4]) for name in files], files)


def images_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """The standard image grids: one row per class, in class order."""
    names = [name for name in GRID_NAMES if name in grids]
    files = {f"grid_{name}.png": png_bytes(grids[name]) for name in names}
    classes = ", ".join(str(name) for name in metrics["classes"])
    return ReportSection("Images", [Paragraph(f"One row per class, in this order: {classes}."),
                                    *(Figure(f"grid_{name}.png", name) for name in names)], files)


def lineage_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> ReportSection:
    """What the numbers were made from: params digest, seed, data and model digests."""
    rows = [[key, ", ".join(f"{k}: {v}" for k, v in value.items())
             if isinstance(value, dict) else value]
            for key, value in metrics.get("lineage", {}).items()]
    return ReportSection("Lineage", [Table(["what", "value"], rows)])


# The report, in order. Add a section here; a builder returning None leaves it out.
SECTIONS: list[SectionBuilder] = [summary_section, missing_arms_section, class_sizes_section,
                                  arms_section, scaling_section, per_class_section,
                                  filtering_section, distillation_section,
                                  distillation_table_section, refinement_section,
                                  contamination_section, confusion_section, images_section,
                                  lineage_section]


def build_sections(metrics: dict[str, Any], grids: dict[str, np.ndarray],
                   builders: Sequence[SectionBuilder] = SECTIONS) -> list[ReportSection]:
    """The sections that have something to say, in order."""
    return [section for builder in builders if (section := builder(metrics, grids)) is not None]


def write_report(directory: Path, metrics: dict[str, Any], grids: dict[str, np.ndarray],
                 html_only: Sequence[ReportSection] = ()) -> dict[str, Path]:
    """Write metrics.json, arms.csv, every section's PNGs, report.md and report.html.

    `html_only` sections (wall times: the cost table) are appended to report.html; report.md
    gets only their title and a pointer, so that it stays byte-identical for the same params.
    """
    sections = build_sections(metrics, grids)
    written: dict[str, Path] = {}
    for section in sections:
        for name, data in section.files.items():
            (directory / name).write_bytes(data)
            written[name] = directory / name
    files = {name: data for section in [*sections, *html_only]
             for name, data in section.files.items()}
    pointers = [ReportSection(section.title, [Paragraph(
        "In report.html only: its numbers change from run to run, and this file does not.")])
        for section in html_only]
    (directory / "metrics.json").write_text(dumps_json(metrics))
    (directory / ARMS_CSV).write_text(arm_table_csv(metrics))
    (directory / "report.md").write_text(render_markdown([*sections, *pointers]))
    (directory / "report.html").write_text(render_html([*sections, *html_only], files))
    for name in ("metrics.json", ARMS_CSV, "report.md", "report.html"):
        written[name] = directory / name
    return written


def render_markdown(sections: Sequence[ReportSection]) -> str:
    """report.md: the first section's title as the page title, the others as `##` headings."""
    parts = []
    for position, section in enumerate(sections):
        parts += [f"{'#' if position == 0 else '##'} {_markdown_line(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                parts.append(block.text)
            elif isinstance(block, Table):
                parts.append(markdown_table(block.header, block.rows))
            else:
                parts.append(f"![{_markdown_line(block.alt)}]({block.name})")
            parts.append("")
    return "\n".join(parts)


def render_html(sections: Sequence[ReportSection], files: dict[str, bytes]) -> str:
    """report.html: one page with every PNG inlined (data URIs), so it can be mailed alone."""
    parts = []
    for position, section in enumerate(sections):
        tag = "h1" if position == 0 else "h2"
        parts.append(f"<{tag}>{html.escape(section.title)}</{tag}>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                parts.append(f"<p>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                parts.append(_html_table(block.header, block.rows))
            else:
                data = base64.b64encode(files[block.name]).decode()
                parts.append(f'<img alt="{html.escape(block.alt)}" '
                             f'src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%;display:block;margin:1em 0}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>synthfactory report</title><style>{style}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _markdown_line(text: str) -> str:
    """Text for a heading or alt text: one line, brackets escaped."""
    return " ".join(str(text).split()).replace("[", "\\[").replace("]", "\\]")


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) +
                   "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
