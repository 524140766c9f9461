"""The evaluation networks of the distillation table's cells (`classifier_distilled`), by the
DD protocol: `eval_models` fresh networks per distilled repeat, for the table's architecture
and each cross-architecture (a soft-label set also trains its hard-label control), each cell
published on its own under `cells/<cell>/`; and, when
the run makes the headline cell (the table's first), the `distilled` arm's classifiers at the
top of the asset's directory (or its record as not built).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthfactory.ops.distillation.cells import Cell
from synthfactory.ops.distillation.cellstore import read_cell
from synthfactory.ops.distillation.dsa import DSA
from synthfactory.ops.distillation.partitions import CELLS
from synthfactory.ops.distillation.protocol import accuracy, train_network
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.artifacts import Artifacts, Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.not_built import (NOT_BUILT_JSON, not_built_record, read_not_built,
                                                write_not_built)
from synthfactory.ops.tensors import to_model_space
from synthfactory.ops.training import HISTORY_JSON
from synthfactory.ops.training.train import save_classifier

ASSET = "classifier_distilled"
# The sub-directory of an architecture's networks holding a soft-label set's hard-label control.
HARD_CONTROL = "hard"


@dataclass(frozen=True)
class NetworkSettings:
    """What the params fix of the evaluation networks (`distilled_set`: architecture and
    `cross_architectures`, `eval_models`, `eval`'s width, epochs, learning rate and batch
    size, DSA), and the seed."""

    architecture: str
    cross_architectures: list[str]
    eval_models: int
    width: int
    epochs: int
    learning_rate: float
    batch_size: int
    dsa: dict[str, Any]
    seed: int
    # mtt/datm cells: train at the cell's learned step size (the reference's lr_net = syn_lr);
    # False is the control that ignores it.
    use_learned_lr: bool = True

    @property
    def architectures(self) -> list[str]:
        """The table's architecture first, then each other cross-architecture."""
        return [self.architecture] + [a for a in self.cross_architectures
                                      if a != self.architecture]


def train_cell_networks(store: Artifacts, table: list[Cell], chosen: list[Cell],
                        n_classes: int, val: tuple[np.ndarray, np.ndarray],
                        settings: NetworkSettings, device: Any, log: Log
                        ) -> Iterator[dict[str, Any]]:
    """Train the `chosen` cells' networks, one cell after the other; yield each cell's row as
    it is published: `key`, `path`, and `built: False` with `not_built_reason` (passed on
    from the cell) or `architectures`, `models`, `val_accuracy` (mean per architecture on `val`, the real
    validation images and labels), `seconds`."""
    val_images, val_labels = val
    val_data = to_model_space(val_images).to(device) if len(val_labels) else None
    for cell in chosen:
        cell_started = time.perf_counter()
        distilled = store.require("distilled_set", CELLS, cell.key)
        record = read_not_built(distilled)
        if record is not None:  # nothing to train: the record is passed on
            with store.publish_dir(ASSET, CELLS, cell.key) as directory:
                write_not_built(directory, f"{ASSET} {cell.key}", record["reason"],
                                upstream="distilled_set")
            yield {"key": cell.key, "path": str(store.path(ASSET, CELLS, cell.key)),
                   "built": False, "not_built_reason": record["reason"]}
            if cell == table[0]:
                publish_headline_not_built(store, cell, record["reason"])
            continue
        repeats = read_cell(distilled)
        with store.publish_dir(ASSET, CELLS, cell.key) as directory:
            history, controls = {}, {}
            for architecture in settings.architectures:
                history[architecture], controls[architecture] = _train_architecture(
                    directory, cell, architecture, repeats, n_classes, (val_data, val_labels),
                    settings, device)
            (directory / HISTORY_JSON).write_text(dumps_json(
                {"cell": cell.key, "architectures": history,
                 **({"hard_label_control": controls} if any(controls.values()) else {})}))
        means = {}  # validation accuracy per architecture (choices read val; test: the report)
        for architecture, rows in history.items():
            accuracies = [row["val_accuracy"] for row in rows if row["val_accuracy"] is not None]
            if accuracies:
                means[architecture] = round(float(np.mean(accuracies)), 4)
                log(f"{cell.key} {architecture}: val accuracy {means[architecture]:.4f} over "
                    f"{len(accuracies)} models")
        yield {"key": cell.key, "path": str(store.path(ASSET, CELLS, cell.key)),
               "architectures": ", ".join(settings.architectures),
               "models": sum(len(rows) for rows in history.values()), "val_accuracy": means,
               "seconds": round(time.perf_counter() - cell_started, 1)}
        if cell == table[0]:
            publish_headline_seeds(store, cell, settings.architecture, repeats,
                                   history[settings.architecture])


def _train_architecture(directory: Any, cell: Cell, architecture: str, repeats: list[Any],
                        n_classes: int, val: tuple[Any, np.ndarray], settings: NetworkSettings,
                        device: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`eval_models` networks of one architecture per repeat, saved under `<architecture>/`,
    and their rows (repeat, model, validation accuracy, training history); for a set with soft
    labels also its hard-label control under `<architecture>/hard/` and its rows (else none).

    The control is DD-Ranking's: the same images with their hard labels, each network with
    the same seed (initialisation, batches, DSA draws) as its soft-label twin, so the pair
    differs in the labels alone."""
    val_data, val_labels = val
    (directory / architecture).mkdir()
    rows, controls = [], []
    for r, repeat in enumerate(repeats):
        label_sets = [("soft" if repeat.soft_labels is not None else "hard", repeat.targets,
                       directory / architecture)]
        if repeat.soft_labels is not None:
            (directory / architecture / HARD_CONTROL).mkdir(exist_ok=True)
            label_sets.append(("hard control", repeat.labels,
                               directory / architecture / HARD_CONTROL))
        for label_mode, targets, place in label_sets:
            for k in range(settings.eval_models):
                net, trained = train_network(
                    repeat.images, targets, n_classes,
                    seed=derive_seed(settings.seed, ASSET, cell.key, architecture, r, k),
                    device=device, architecture=architecture, width=settings.width,
                    epochs=settings.epochs, learning_rate=settings.learning_rate,
                    batch_size=settings.batch_size, dsa=DSA(**settings.dsa),
                    learned_lr=repeat.learned_lr if settings.use_learned_lr else None)
                save_classifier(place / f"r{r}-m{k}.safetensors", net)
                row = {"repeat": r, "model": k, "labels": label_mode, "val_accuracy": accuracy(
                    net, val_data, val_labels) if val_data is not None else None, **trained}
                (controls if label_mode == "hard control" else rows).append(row)
    return rows, controls


def publish_headline_seeds(store: Artifacts, cell: Cell, architecture: str,
                           repeats: list[Any], rows: list[dict[str, Any]]) -> None:
    """The headline cell's networks of the table's architecture as `seed-<i>.safetensors`
    (the `distilled` arm), then `history.json` last; seeds left over from a larger earlier set
    are removed."""
    source = store.path(ASSET, CELLS, cell.key, architecture)
    seeds = []
    for index, row in enumerate(rows):
        with store.publish_file(ASSET, f"seed-{index}.safetensors") as temp:
            shutil.copyfile(source / f"r{row['repeat']}-m{row['model']}.safetensors", temp)
        seeds.append({"seed_index": index, **row})
    for stale in store.path(ASSET).glob("seed-*.safetensors"):
        if int(stale.stem.split("-")[1]) >= len(rows):
            stale.unlink()
            store.retract(ASSET, stale.name)
    store.retract(ASSET, NOT_BUILT_JSON)  # built now: an old record goes
    store.path(ASSET, NOT_BUILT_JSON).unlink(missing_ok=True)
    with store.publish_file(ASSET, HISTORY_JSON) as temp:
        temp.write_text(dumps_json({
            "arm": "distilled", "n_train": len(repeats[0].images), "sources": [cell.key],
            "soft_labels": repeats[0].soft_labels is not None, "seeds": seeds}))


def publish_headline_not_built(store: Artifacts, cell: Cell, reason: str) -> None:
    """The headline cell was not built (`reason`): no `seed-<i>.safetensors`, the `distilled`
    arm's record (`not_built.json`, passed on from distilled_set) and a history without seeds,
    last."""
    for stale in store.path(ASSET).glob("seed-*.safetensors"):
        stale.unlink()
        store.retract(ASSET, stale.name)
    with store.publish_file(ASSET, NOT_BUILT_JSON) as temp:
        temp.write_text(dumps_json(not_built_record(
            ASSET, f"distilled_set was not built: cell {cell.key}: {reason}",
            upstream="distilled_set")))
    with store.publish_file(ASSET, HISTORY_JSON) as temp:
        temp.write_text(dumps_json({"arm": "distilled", "n_train": 0, "sources": [cell.key],
                                    "soft_labels": None, "seeds": []}))
