"""The distillation table: test accuracy of every cell's evaluation networks, and its report part.

Rows are `{method, ipc, source, architecture, accuracy_mean, accuracy_std, n_models, repeats,
seconds}`: mean ± sample std (ddof 1) over every network of the cell (repeats × eval_models),
the randomness of distillation seeds and of network initialisation and batches together.
`seconds` is the cell's distillation wall time (all repeats, from its cell.json), beside the
accuracy as distillation papers report cost; it is the one field of metrics.json that differs
between two runs of the same params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthfactory.ops.distillation.cells import parse_cell
from synthfactory.ops.distillation.cellstore import CELL_JSON, cell_dir
from synthfactory.ops.evaluation.metrics import accuracy, mean_std
from synthfactory.ops.storage.not_built import read_not_built

# The published MNIST table (DC paper, ConvNet, IPC 1/10/50), for scale: another dataset.
PUBLISHED_MNIST = {"random": (64.9, 95.1, 97.9), "herding": (89.2, 93.7, 94.8),
                   "kcenter": (89.3, 84.4, 97.4), "dc": (91.7, 97.4, 98.8),
                   "dsa": (88.7, 97.8, 99.2), "dm": (89.7, 97.5, 98.6)}


def distillation_table(classifier_dir: Path, distilled_dir: Path, cells: list[str],
                       test_images: np.ndarray, test_labels: np.ndarray,
                       device: torch.device) -> list[dict[str, Any]]:
    """Test accuracy of every cell × architecture from `classifier_distilled`'s networks (cells
    recorded as not built have no row)."""
    from synthfactory.ops.training.train import load_classifier, predict_proba

    rows = []
    for key in cells:
        cell = parse_cell(key)
        if read_not_built(cell_dir(distilled_dir, key)) is not None:
            continue
        cell_record = cell_dir(distilled_dir, key) / CELL_JSON
        networks = cell_dir(classifier_dir, key)
        for needed in (cell_record, networks):
            if not needed.exists():  # each cell is a partition: this one was not made yet
                raise FileNotFoundError(f"cell {key} is not finished ({needed} does not exist): "
                                        "materialize distilled_set and classifier_distilled "
                                        f"partition {key}")
        record = json.loads(cell_record.read_text())
        for architecture_dir in sorted(p for p in networks.iterdir() if p.is_dir()):
            accuracies = []
            for checkpoint in sorted(architecture_dir.glob("r*-m*.safetensors")):
                model = load_classifier(checkpoint, device)
                predicted = predict_proba(model, test_images, device=device).argmax(1)
                accuracies.append(accuracy(predicted, test_labels))
            if not accuracies:
                raise FileNotFoundError(f"{architecture_dir} has no evaluation networks: "
                                        "materialize classifier_distilled")
            mean, std = mean_std(accuracies)
            rows.append({"method": cell.method, "ipc": cell.ipc, "source": cell.source,
                         "architecture": architecture_dir.name, "accuracy_mean": mean,
                         "accuracy_std": std, "n_models": len(accuracies),
                         "repeats": len(record["repeats"]), "seconds": record["seconds"]})
    return rows


def not_built_cells(distilled_dir: Path, cells: list[str]) -> dict[str, str]:
    """cell → why it was not built, for the cells whose directory is a not-built record (each
    cell is a partition: read from the cells, not from the headline run's summary)."""
    records = {key: read_not_built(cell_dir(distilled_dir, key)) for key in cells}
    return {key: str(record["reason"]) for key, record in records.items() if record is not None}


def table_by_ipc(rows: list[dict[str, Any]], architecture: str, source: str
                 ) -> tuple[list[str], list[list[str]]]:
    """Rows method, columns IPC: `mean ± std` for one architecture and source."""
    chosen = [r for r in rows if r["architecture"] == architecture and r["source"] == source]
    ipcs = sorted({r["ipc"] for r in chosen})
    methods = list(dict.fromkeys(r["method"] for r in chosen))
    cells = {(r["method"], r["ipc"]): r for r in chosen}
    body = [[method, *(f"{cells[method, ipc]['accuracy_mean']:.4f} ± "
                       f"{cells[method, ipc]['accuracy_std']:.4f}"
                       if (method, ipc) in cells else "" for ipc in ipcs)]
            for method in methods]
    return ["method", *(f"IPC {ipc}" for ipc in ipcs)], body


def cross_architecture_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Rows cell, columns architecture (only when more than one architecture was trained)."""
    architectures = list(dict.fromkeys(r["architecture"] for r in rows))
    keys = list(dict.fromkeys(f"{r['method']}-ipc{r['ipc']}-{r['source']}" for r in rows))
    index = {(f"{r['method']}-ipc{r['ipc']}-{r['source']}", r["architecture"]): r for r in rows}
    body = [[key, *(f"{index[key, a]['accuracy_mean']:.4f} ± {index[key, a]['accuracy_std']:.4f}"
                    if (key, a) in index else "" for a in architectures)] for key in keys]
    return ["cell", *architectures], body


def distillation_table_section(metrics: dict[str, Any], grids: dict[str, np.ndarray]) -> Any:
    """The report's distillation table(s): per source, methods × IPC on the first architecture;
    a cross-architecture table when several were trained; the published MNIST row for scale."""
    from synthfactory.ops.evaluation.report import Paragraph, ReportSection, Table

    rows = metrics.get("distillation_table")
    not_built = (metrics.get("distillation") or {}).get("not_built") or {}
    if not rows and not not_built:
        return None
    blocks: list[Any] = [Paragraph(
        "Accuracy on the real test images of networks trained only on each distilled set (DD "
        "protocol: fresh networks with DSA; mean ± sample std over repeats × evaluation "
        "networks).")]
    if not_built:  # cells the data could not make: absent from the tables below
        blocks.append(Table(["cell not built", "why"], [[key, reason]
                                                        for key, reason in not_built.items()]))
    if not rows:
        return ReportSection("Distillation table", blocks)
    first = rows[0]["architecture"]
    for source in dict.fromkeys(r["source"] for r in rows):
        blocks += [Paragraph(f"Source {source}, {first}:"), Table(*table_by_ipc(rows, first,
                                                                                  source))]
    if len({r["architecture"] for r in rows}) > 1:
        blocks += [Paragraph("Across architectures:"), Table(*cross_architecture_table(rows))]
    blocks += [Paragraph("For scale, not comparable (MNIST, 28 px, DC paper's ConvNet), "
                         "IPC 1 / 10 / 50:"),
               Table(["method", "IPC 1", "IPC 10", "IPC 50"],
                     [[name, *(f"{v:.1f}" for v in values)]
                      for name, values in PUBLISHED_MNIST.items()])]
    return ReportSection("Distillation table", blocks)
