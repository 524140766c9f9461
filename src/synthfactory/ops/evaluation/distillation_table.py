"""The distillation table: test accuracy of every cell's evaluation networks (the report's part
is `ops/report/distillation_table.py`).

Rows are `{cell, method, ipc, source, architecture, accuracy_mean, accuracy_std, n_models,
repeats, n_images, protocol, hard_label_control, seconds}`: mean ± sample std (ddof 1) over
every network of the cell (repeats × eval_models), the randomness of distillation seeds and of
network initialisation and batches together; `protocol` is how those networks trained, read
from their own histories (epochs, networks per repeat, learning rates and where each came
from); `hard_label_control` the same for a soft-label set's networks on its hard labels.
`with_dd_ranking` adds each row's DD-Ranking scores.
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

from synthfactory.ops.distillation.cell_networks import HARD_CONTROL
from synthfactory.ops.distillation.cells import WHOLE, parse_cell
from synthfactory.ops.distillation.cellstore import CELL_JSON, cell_dir
from synthfactory.ops.distillation.ranking import DEFAULT_WEIGHT, PAPER, dd_ranking_scores
from synthfactory.ops.evaluation.comparisons import ArmCorrectness
from synthfactory.ops.evaluation.metrics import accuracy, mean_std
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.training import HISTORY_JSON
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import load_classifier


def distillation_table(classifier_dir: Path, distilled_dir: Path, cells: list[str],
                       test_images: np.ndarray, test_labels: np.ndarray, device: torch.device
                       ) -> tuple[list[dict[str, Any]], list[ArmCorrectness]]:
    """Test accuracy of every cell × architecture from `classifier_distilled`'s networks (cells
    recorded as not built have no row), and each row's correctness (repeats × networks × test
    images, one replicate id per repeat of the cell) for the comparisons against random."""
    rows, correct = [], []
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
        trained = json.loads((networks / HISTORY_JSON).read_text())["architectures"]
        for architecture_dir in sorted(p for p in networks.iterdir() if p.is_dir()):
            accuracies = []
            by_repeat: dict[str, list[np.ndarray]] = {}
            for checkpoint in sorted(architecture_dir.glob("r*-m*.safetensors")):
                model = load_classifier(checkpoint, device)
                predicted = predict_proba(model, test_images, device=device).argmax(1)
                accuracies.append(accuracy(predicted, test_labels))
                by_repeat.setdefault(checkpoint.stem.split("-")[0], []).append(predicted)
            if not accuracies:
                raise FileNotFoundError(f"{architecture_dir} has no evaluation networks: "
                                        "materialize classifier_distilled")
            correct.append(_cell_correctness(key, by_repeat, test_labels))
            control = [accuracy(predict_proba(load_classifier(checkpoint, device), test_images,
                                              device=device).argmax(1), test_labels)
                       for checkpoint in sorted((architecture_dir / HARD_CONTROL)
                                                .glob("r*-m*.safetensors"))]
            mean, std = mean_std(accuracies)
            rows.append({"cell": key, "method": cell.method, "ipc": cell.ipc,
                         "source": cell.source,
                         "architecture": architecture_dir.name, "accuracy_mean": mean,
                         "accuracy_std": std, "n_models": len(accuracies),
                         "repeats": len(record["repeats"]),
                         "n_images": record["repeats"][0]["n_images"],
                         "protocol": _protocol(trained[architecture_dir.name]),
                         # a soft-label set's networks on its hard labels (DD-Ranking's HLR)
                         "hard_label_control": _control(control),
                         "seconds": record["seconds"]})
    return rows, correct


def _control(accuracies: list[float]) -> dict[str, Any] | None:
    """A soft-label set's hard-label control: mean ± sample std over its networks (None: the
    set has hard labels, so no control was trained)."""
    if not accuracies:
        return None
    mean, std = mean_std(accuracies)
    return {"accuracy_mean": mean, "accuracy_std": std, "n_models": len(accuracies)}


def _protocol(networks: list[dict[str, Any]]) -> dict[str, Any]:
    """How a cell's networks trained, from their histories: epochs, networks per repeat, the
    learning rates and their source (`eval.learning_rate`, or a trajectory cell's
    `learned_lr`)."""
    per_repeat: dict[int, int] = {}
    for network in networks:
        per_repeat[network["repeat"]] = per_repeat.get(network["repeat"], 0) + 1
    return {"epochs": sorted({network["epochs"] for network in networks}),
            "networks_per_repeat": max(per_repeat.values()),
            "learning_rates": sorted({round(network["learning_rate"], 8)
                                      for network in networks}),
            "learning_rate_source": sorted({network["learning_rate_source"]
                                            for network in networks})}


def with_dd_ranking(rows: list[dict[str, Any]], labels: str) -> list[dict[str, Any]]:
    """Each row with `dd_ranking` (ops/distillation/ranking.py's definitions): IOR against the
    random cell of the same ipc, source and architecture; HLR against the `whole-real` row of
    the same architecture (the full real train set, hard labels, the same protocol); LRS when
    both exist. From the cells' mean accuracies (a row's networks are not paired with the random
    draws' or the whole set's, so the package's per-run averaging has nothing to pair; IOR and
    HLR are the same either way, LRS differs by its curvature only). With soft labels (`labels`
    "soft") IOR compares the soft-label accuracies (the random cell's soft labels come from the
    same judge) and HLR uses the cell's hard-label control (`hard_label_control`: the same
    images and network seeds, hard labels), as ddranking's soft-label mode does. The random
    and whole rows themselves get None."""
    random = {(r["ipc"], r["source"], r["architecture"]): r for r in rows
              if r["method"] == "random"}
    whole = {r["architecture"]: r for r in rows if r["method"] == WHOLE and r["source"] == "real"}
    ranked = []
    for row in rows:
        if row["method"] in ("random", WHOLE):
            ranked.append({**row, "dd_ranking": None})
            continue
        baseline = random.get((row["ipc"], row["source"], row["architecture"]))
        upper = whole.get(row["architecture"])
        hard = (row["accuracy_mean"] if labels == "hard" else
                (row.get("hard_label_control") or {}).get("accuracy_mean"))
        scores: dict[str, Any] = {"ior": None, "hlr": None, "lrs": None, "mode": labels,
                                  "weight": DEFAULT_WEIGHT, "definition": PAPER,
                                  "random": _key(baseline), "whole": _key(upper), "missing": []}
        if baseline is None:
            scores["missing"].append(f"no random-ipc{row['ipc']}-{row['source']} cell (IOR): "
                                     "add random to distilled_set.methods")
        if upper is None:
            scores["missing"].append("no whole-real cell (HLR): add whole to "
                                     "distilled_set.methods and real to its sources")
        if hard is None:
            scores["missing"].append("soft labels without the hard-label control (HLR): "
                                     "re-make classifier_distilled for this cell")
        if baseline is not None and upper is not None and hard is not None:
            full = dd_ranking_scores(row["accuracy_mean"], baseline["accuracy_mean"],
                                     upper["accuracy_mean"],
                                     distilled_hard=None if labels == "hard" else hard)
            scores |= {"ior": full.ior, "hlr": full.hlr, "lrs": full.lrs}
        else:
            if baseline is not None:
                scores["ior"] = row["accuracy_mean"] - baseline["accuracy_mean"]
            if upper is not None and hard is not None:
                scores["hlr"] = upper["accuracy_mean"] - hard
        ranked.append({**row, "dd_ranking": scores})
    return ranked


def _key(row: dict[str, Any] | None) -> str | None:
    return None if row is None else row["cell"]


def _cell_correctness(key: str, by_repeat: dict[str, list[np.ndarray]],
                      labels: np.ndarray) -> ArmCorrectness:
    """A cell's correctness: its repeats (each its own distillation draw) × networks × images;
    repeats with fewer networks than the others are cut to the common count."""
    networks = min(len(predicted) for predicted in by_repeat.values())
    repeats = sorted(by_repeat)
    stacked = np.stack([np.stack(by_repeat[r][:networks]) for r in repeats])
    return ArmCorrectness.from_predictions(key, stacked, labels,
                                           tuple(f"{key}-{r}" for r in repeats))


def not_built_cells(distilled_dir: Path, cells: list[str]) -> dict[str, str]:
    """cell → why it was not built, for the cells whose directory is a not-built record (each
    cell is a partition: read from the cells, not from the headline run's summary)."""
    records = {key: read_not_built(cell_dir(distilled_dir, key)) for key in cells}
    return {key: str(record["reason"]) for key, record in records.items() if record is not None}
