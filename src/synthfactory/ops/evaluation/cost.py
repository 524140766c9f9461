"""What the answer cost: seconds per asset, the device, images per second and GPU-hours.

Wall times differ from run to run, so they never enter metrics.json or report.md (both are
byte-identical for the same params: tests/reliability/test_determinism.py). They go to
`cost.json` beside them and to a section of report.html only (`ops/report/cost.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
