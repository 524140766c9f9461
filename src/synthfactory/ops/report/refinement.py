"""The report's weak-class refinement section: the 2×2 at equal image budget (targeted vs uniform
allocation × the plan's vs the base recipe), the paired differences that credit targeting and
the recipe, per class before and after, the worst class, and why each class got what it got (the
`refinement` entry is made by `ops/refinement/summary.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfactory.ops.report.blocks import (Block, Paragraph, ReportSection, Table,
                                            accuracy_cell)

ARMS = ("refined", "targeted_base", "uniform_plan", "uniform")
# (allocation, its arms at the plan's recipe and at the base recipe)
GRID = (("targeted (the plan's)", "refined", "targeted_base"),
        ("uniform", "uniform_plan", "uniform"))


def refinement_section(metrics: dict[str, Any],
                       grids: dict[str, np.ndarray]) -> ReportSection | None:
    """The loop: the 2×2 and its verdicts, per round, per class before/after, the worst class."""
    loop = metrics.get("refinement")
    if not loop:
        return None
    last = loop["rounds"][-1]
    blocks: list[Block] = [Paragraph(
        f"Each round reads validation results only (the {loop['base_arm']} arm in round 1, the "
        "refined arm after) and spends its budget on the classes that trail the real arm, in "
        "proportion to the gap, with recipe changes chosen from the judge's pass rate and the "
        "confusion pairs. A control changes one thing, so four arms add the same number of "
        "extra images to the same synthetic set with the same classifier seeds: the plan's "
        "allocation or a uniform one, each with the plan's recipe or the base recipe "
        "(uniform_plan: a class the plan gave no images gets the plan's recipe change applied "
        "to its own recipe). Targeting is credited only by targeted − uniform at the same "
        "recipe. Accuracies are on the real test split (validation in brackets), mean ± sample "
        "std over classifier seeds.")]
    blocks.append(Table(["allocation", "the plan's recipe", "the base recipe"],
                        [[label, _cell(last[plan]), _cell(last[base])]
                         for label, plan, base in GRID]))
    blocks.append(Table(
        ["effect", "held fixed", "a − b", "difference", "95% interval", "verdict"],
        [[c["effect"], c["held"], f"{c['a']} − {c['b']}", f"{100 * c['difference']:+.2f}",
          f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]", f"**{c['verdict']}**"]
         for c in loop["comparisons"]]))
    covers = loop["comparisons"][0]
    blocks.append(Paragraph(
        f"{loop['targeting']} Differences in points; paired bootstrap over "
        f"{' and '.join(covers['covers'])} ({covers['draws']} draws). Not covered: "
        f"{'; '.join(covers['not_covered'])}; nor the one draw of each arm's extra images."))
    if len(loop["rounds"]) > 1:
        blocks.append(Table(["round", "budget", *ARMS],
                            [[r["round"], r["budget"], *(_cell(r[arm], val=False) for arm in ARMS)]
                             for r in loop["rounds"]]))
    blocks += _per_class(metrics, loop, last)
    return ReportSection("Weak-class refinement", blocks)


def _cell(row: dict[str, Any], val: bool = True) -> str:
    text = f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}"
    if val and row.get("val_accuracy_mean") is not None:
        text += f" ({row['val_accuracy_mean']:.4f} ± {row['val_accuracy_std']:.4f})"
    return text


def _per_class(metrics: dict[str, Any], loop: dict[str, Any], last: dict[str, Any]
               ) -> list[Block]:
    """Per class before/after in every arm, the worst class, and each class's reason."""
    names = metrics["classes"]
    base = metrics["arms"][loop["base_arm"]]
    rows = []
    for index, name in enumerate(names):
        images = sum(r["allocation"].get(name, 0) for r in loop["rounds"])
        changes = sorted({c for r in loop["rounds"] for c in r["changes"].get(name, [])})
        rows.append([name, images, ", ".join(changes) or "-",
                     accuracy_cell(base["per_class_accuracy"][index]),
                     *(accuracy_cell(last[arm]["per_class_accuracy"][index]) for arm in ARMS)])
    blocks: list[Block] = [Table(["class", "targeted extra images", "changes",
                                  f"before ({loop['base_arm']})", *ARMS], rows)]
    worst = loop["worst_class"]
    if None in (worst["before"], worst["after"], worst["uniform_after"]):
        on_test = "the test split has no image of it"
    else:
        after = worst.get("after_by_arm") or {"refined": worst["after"],
                                               "uniform": worst["uniform_after"]}
        on_test = (f"on test {worst['before']:.3f} before; after: "
                   + ", ".join(f"{arm} {value:.3f}" for arm, value in after.items()))
    blocks.append(Paragraph(
        f"Worst class on validation: {worst['name']} (validation accuracy "
        f"{worst['val_accuracy']:.2f}); {on_test}."))
    for r in loop["rounds"]:
        for name, why in r["why"].items():
            if r["allocation"].get(name):
                blocks.append(Paragraph(f"Round {r['round']}, class {name}: {why}."))
    return blocks
