"""The report's distillation tables: per source, methods × IPC on the first architecture; a
cross-architecture table when several were trained; the published MNIST row for scale (the rows
are measured by `ops/evaluation/distillation_table.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import Paragraph, ReportSection, Table

# The published MNIST table (DC paper, ConvNet, IPC 1/10/50), for scale: another dataset.
PUBLISHED_MNIST = {"random": (64.9, 95.1, 97.9), "herding": (89.2, 93.7, 94.8),
                   "kcenter": (89.3, 84.4, 97.4), "dc": (91.7, 97.4, 98.8),
                   "dsa": (88.7, 97.8, 99.2), "dm": (89.7, 97.5, 98.6)}


def table_by_ipc(rows: list[dict[str, Any]], architecture: str, source: str
                 ) -> tuple[list[str], list[list[str]]]:
    """Rows method, columns IPC: `mean ± std [95% interval]` for one architecture and source
    (the whole source, which has no IPC, is `whole_source_line`'s)."""
    chosen = [r for r in rows if r["architecture"] == architecture and r["source"] == source
              and r["method"] != "whole"]
    ipcs = sorted({r["ipc"] for r in chosen})
    methods = list(dict.fromkeys(r["method"] for r in chosen))
    cells = {(r["method"], r["ipc"]): r for r in chosen}
    body = [[method, *(_accuracy(cells[method, ipc]) if (method, ipc) in cells else ""
                       for ipc in ipcs)]
            for method in methods]
    return ["method", *(f"IPC {ipc}" for ipc in ipcs)], body


def _accuracy(row: dict[str, Any]) -> str:
    """`mean ± std`, and the 95% interval when the row has one."""
    interval = (f" [{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}]" if row.get("ci95") else "")
    return f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}{interval}"


def whole_source_line(rows: list[dict[str, Any]], architecture: str, source: str) -> str | None:
    """The whole-dataset row of one source and architecture as a sentence, or None."""
    for row in rows:
        if (row["method"], row["source"], row["architecture"]) == ("whole", source, architecture):
            return (f"The whole {source} source ({row['n_images']} images), same protocol: "
                    f"{_accuracy(row)} ({row['n_models']} networks).")
    return None


def protocol_line(rows: list[dict[str, Any]]) -> str:
    """Which evaluation protocol the table used, read from the networks' histories, beside the
    reference's (1000 epochs, 20 networks)."""
    epochs = sorted({e for row in rows for e in row["protocol"]["epochs"]})
    networks = sorted({row["protocol"]["networks_per_repeat"] for row in rows})
    learned = [row["cell"] for row in rows
               if "learned_lr" in row["protocol"]["learning_rate_source"]]
    rates = sorted({r for row in rows if "learned_lr" not in row["protocol"]["learning_rate_source"]
                    for r in row["protocol"]["learning_rates"]})
    reference = epochs == [1000] and networks == [20]
    rate = [f"learning rate {'/'.join(f'{r:g}' for r in rates)}"] if rates else []
    step = ([f"the learned step size for {', '.join(dict.fromkeys(learned))}"] if learned
            else [])
    return (f"Protocol: {'/'.join(map(str, epochs))} epochs, {'/'.join(map(str, networks))} "
            f"networks per distilled repeat, " + ", ".join(rate + step)
            + (" — the reference protocol." if reference else
               " — not the reference protocol (1000 epochs, 20 networks; "
               "configs/digits-distillation-reference.yaml runs it)."))


def dd_ranking_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """Cells × DD-Ranking scores in points (IOR, HLR; LRS × 100, as the paper prints them),
    with each soft-label set's hard-label control accuracy when the table has one."""
    scored = [r for r in rows if r.get("dd_ranking")]
    if not scored:
        return None

    def points(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:+.2f}"

    controls = any(r.get("hard_label_control") for r in scored)
    body = [[r["cell"], r["architecture"],
             *([f"{r['hard_label_control']['accuracy_mean']:.4f}" if r.get("hard_label_control")
                else "—"] if controls else []),
             points(r["dd_ranking"]["ior"]), points(r["dd_ranking"]["hlr"]),
             "—" if r["dd_ranking"]["lrs"] is None else f"{100 * r['dd_ranking']['lrs']:.2f}",
             "; ".join(r["dd_ranking"]["missing"])] for r in scored]
    return ["cell", "architecture", *(["hard-label control"] if controls else []), "IOR (pts)",
            "HLR (pts)", "LRS (×100)", "missing"], body


def cross_architecture_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Rows cell, columns architecture (only when more than one architecture was trained)."""
    architectures = list(dict.fromkeys(r["architecture"] for r in rows))
    keys = list(dict.fromkeys(r["cell"] for r in rows))
    index = {(r["cell"], r["architecture"]): r for r in rows}
    body = [[key, *(f"{index[key, a]['accuracy_mean']:.4f} ± {index[key, a]['accuracy_std']:.4f}"
                    if (key, a) in index else "" for a in architectures)] for key in keys]
    return ["cell", *architectures], body


def distillation_table_section(metrics: dict[str, Any],
                               grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The report's distillation table(s): per source, methods × IPC on the first architecture;
    a cross-architecture table when several were trained; the published MNIST row for scale."""
    rows = metrics.get("distillation_table")
    not_built = (metrics.get("distillation") or {}).get("not_built") or {}
    if not rows and not not_built:
        return None
    blocks: list[Any] = [Paragraph(
        "Accuracy on the real test images of networks trained only on each distilled set (DD "
        "protocol: fresh networks with DSA; mean ± sample std over repeats × evaluation "
        "networks, [95% interval] over repeats × networks × test images; each learned cell's "
        "verdict against random is in the verdict table).")]
    if not_built:  # cells the data could not make: absent from the tables below
        blocks.append(Table(["cell not built", "why"], [[key, reason]
                                                        for key, reason in not_built.items()]))
    if not rows:
        return ReportSection("Distillation table", blocks)
    blocks.append(Paragraph(protocol_line(rows)))
    first = rows[0]["architecture"]
    for source in dict.fromkeys(r["source"] for r in rows):
        blocks += [Paragraph(f"Source {source}, {first}:"), Table(*table_by_ipc(rows, first,
                                                                                  source))]
        whole = whole_source_line(rows, first, source)
        if whole is not None:
            blocks.append(Paragraph(whole))
    ranking = dd_ranking_table(rows)
    if ranking is not None:
        mode = next(r["dd_ranking"]["mode"] for r in rows if r.get("dd_ranking"))
        blocks += [Paragraph(
            f"DD-Ranking ({mode}-label mode; Li et al. 2025, arXiv 2505.13300, ddranking 0.2.0's "
            "definitions): IOR = accuracy − the random cell's of the same IPC and source, HLR = "
            "the whole real set's accuracy − accuracy"
            + (" (soft labels: the hard-label control's accuracy, the same images and network "
               "seeds trained on hard labels)" if mode == "soft" else "")
            + ", LRS their rescaled combination (weight 0.5), from the rows' mean "
            "accuracies."), Table(*ranking)]
    if len({r["architecture"] for r in rows}) > 1:
        blocks += [Paragraph("Across architectures:"), Table(*cross_architecture_table(rows))]
    blocks += [Paragraph("For scale, not comparable (MNIST, 28 px, DC paper's ConvNet), "
                         "IPC 1 / 10 / 50:"),
               Table(["method", "IPC 1", "IPC 10", "IPC 50"],
                     [[name, *(f"{v:.1f}" for v in values)]
                      for name, values in PUBLISHED_MNIST.items()])]
    return ReportSection("Distillation table", blocks)
