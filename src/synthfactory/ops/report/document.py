"""The evaluation report: metrics.json, report.md and a self-contained report.html.

A report is an ordered list of sections (`SECTIONS`); each is built from `metrics` (and the
image grids) by one function and holds blocks (`blocks.py`: paragraphs, tables, figures) that
render to both markdown and HTML, so the two never disagree. A new part of the report is one
function returning a `ReportSection` (or None when it has nothing to say), added to `SECTIONS`.
Every user-provided string (class names) is escaped for markdown tables and for HTML.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.report import METRICS_JSON, REPORT_HTML, REPORT_MD
from synthfactory.ops.report.arms import arms_section
from synthfactory.ops.report.blocks import Paragraph, ReportSection, SectionBuilder, Table
from synthfactory.ops.report.class_sizes import class_sizes_section
from synthfactory.ops.report.contamination import contamination_section
from synthfactory.ops.report.distillation_table import distillation_table_section
from synthfactory.ops.report.generated_set import generated_set_section
from synthfactory.ops.report.missing import missing_arms_section
from synthfactory.ops.report.refinement import refinement_section
from synthfactory.ops.report.scaling import scaling_section
from synthfactory.ops.report.sections import (confusion_section, distillation_section,
                                              filtering_section, images_section, lineage_section,
                                              per_class_section, summary_section)
from synthfactory.ops.report.tables import ARMS_CSV, arm_table_csv, markdown_table
from synthfactory.ops.report.verdicts import verdicts_section
from synthfactory.ops.report.warnings import warnings_section
from synthfactory.ops.storage.atomic import dumps_json

# The report, in order. Add a section here; a builder returning None leaves it out.
SECTIONS: list[SectionBuilder] = [warnings_section, verdicts_section, summary_section,
                                  missing_arms_section, class_sizes_section, arms_section,
                                  scaling_section, per_class_section, filtering_section,
                                  distillation_section, distillation_table_section,
                                  refinement_section, generated_set_section,
                                  contamination_section, confusion_section,
                                  images_section, lineage_section]


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
    (directory / METRICS_JSON).write_text(dumps_json(metrics))
    (directory / ARMS_CSV).write_text(arm_table_csv(metrics))
    (directory / REPORT_MD).write_text(render_markdown([*sections, *pointers]))
    (directory / REPORT_HTML).write_text(render_html([*sections, *html_only], files))
    for name in (METRICS_JSON, ARMS_CSV, REPORT_MD, REPORT_HTML):
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
