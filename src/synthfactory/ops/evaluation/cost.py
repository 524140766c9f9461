"""What the answer cost: seconds per asset, the device, images per second and GPU-hours.

Wall times differ from run to run, so they never enter metrics.json or report.md (both are
byte-identical for the same params: tests/reliability/test_determinism.py). They go to
`cost.json` beside them and to a section of report.html only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synthfactory.ops.evaluation.report import ReportSection

COST_JSON = "cost.json"


@dataclass(frozen=True)
class AssetCost:
    """One asset's current materialization: its steps' wall seconds (every partition's for a
    partitioned asset; None when the Dagster instance holds no record of one), and the images
    it processed with what they were."""

    asset: str
    seconds: float | None
    images: int | None = None
    unit: str = ""


def cost_summary(rows: list[AssetCost], device: str, gpus: int) -> dict[str, Any]:
    """The cost table: per asset seconds, images/s and (on CUDA) GPU-hours; totals."""
    cuda = device.startswith("cuda")
    assets = []
    for row in rows:
        rate = (row.images / row.seconds if row.images and row.seconds else None)
        assets.append({
            "asset": row.asset, "seconds": None if row.seconds is None else round(row.seconds, 2),
            "images": row.images, "unit": row.unit,
            "images_per_second": None if rate is None else round(rate, 1),
            "gpu_hours": (round(row.seconds * gpus / 3600, 4)
                          if cuda and row.seconds is not None else None)})
    known = [row.seconds for row in rows if row.seconds is not None]
    return {"device": device, "gpus": gpus if cuda else 0, "assets": assets,
            "total_seconds": round(sum(known), 2),
            "total_gpu_hours": round(sum(known) * gpus / 3600, 4) if cuda else None,
            "unrecorded": [row.asset for row in rows if row.seconds is None]}


def cost_section(cost: dict[str, Any]) -> ReportSection:
    """The cost table as a report section (report.html only: wall times vary between runs)."""
    from synthfactory.ops.evaluation.report import Paragraph, ReportSection, Table

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
