"""The report's cost section: seconds per asset, images per second and GPU-hours, for
report.html only (wall times vary between runs; `ops/evaluation/cost.py` sums them)."""

from __future__ import annotations

from typing import Any

from synthfactory.ops.evaluation.cost import COST_JSON
from synthfactory.ops.report.blocks import Paragraph, ReportSection, Table


def cost_section(cost: dict[str, Any]) -> ReportSection:
    """The cost table as a report section (report.html only: wall times vary between runs)."""
    gpu = cost["gpus"] > 0
    rows = [[row["asset"], "—" if row["seconds"] is None else f"{row['seconds']:.1f}",
             "" if row["images_per_second"] is None
             else f"{row['images_per_second']:.1f} ({row['unit']})",
             *(["" if row["gpu_hours"] is None else f"{row['gpu_hours']:.4f}"] if gpu else [])]
            for row in cost["assets"]]
    header = ["asset", "seconds", "images/s", *(["GPU-hours"] if gpu else [])]
    blocks = [Paragraph(f"Device: {cost['device']}. Seconds are each asset's last materialization "
                        f"(its Dagster step); {cost['total_seconds']:.1f} s in all"
                        + (f", {cost['total_gpu_hours']:.4f} GPU-hours" if gpu else "") + "."),
              Table(header, rows)]
    if cost["unrecorded"]:
        blocks.append(Paragraph("Not in this Dagster instance's records (materialized by another "
                                "instance, e.g. one dvc repro stage per process): "
                                + ", ".join(cost["unrecorded"]) + "."))
    blocks.append(Paragraph("Wall times vary between runs, so they are kept out of metrics.json "
                            "and report.md (byte-identical for the same params); they are in "
                            f"{COST_JSON} and in this page."))
    return ReportSection("Cost", blocks)
