"""The arm table: one row per arm, grouped (references, synthetic, combined), as markdown, CSV
(DVC's plot data) or rows.

The order and groups come from metrics.json itself (`arm_order`, each arm's `group`, written by
eval_report from the arm registry), so that a report can be rebuilt from its metrics alone and
this module needs nothing from the registry.
"""

from __future__ import annotations

from typing import Any

ARMS_CSV = "arms.csv"  # the arm table as plot data (dvc.yaml declares it as a plot)
# The order of metrics written before arms had groups (no `arm_order`).
LEGACY_ORDER = ("real", "synthetic", "filtered", "distilled")


def ordered_arms(metrics: dict[str, Any]) -> list[str]:
    """The arms of a metrics dict in report order (`arm_order`; others sorted, last)."""
    order = metrics.get("arm_order") or LEGACY_ORDER
    known = [arm for arm in order if arm in metrics["arms"]]
    return known + sorted(set(metrics["arms"]) - set(known))


def arm_group(metrics: dict[str, Any], arm: str) -> str:
    """The heading of an arm's group ('other' when metrics.json does not say)."""
    return str(metrics["arms"][arm].get("group", "other"))


def arm_table_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: group, arm, n_train, accuracy_mean, accuracy_std, seeds."""
    return [{"group": arm_group(metrics, arm), "arm": arm,
             **{key: metrics["arms"][arm][key] for key in
                ("n_train", "accuracy_mean", "accuracy_std", "seeds")}}
            for arm in ordered_arms(metrics)]


def arm_table_csv(metrics: dict[str, Any]) -> str:
    """The arm table as CSV (arm, n_train, accuracy_mean, accuracy_std, seeds, group): DVC's
    plot data."""
    columns = ["arm", "n_train", "accuracy_mean", "accuracy_std", "seeds", "group"]
    rows = [",".join(columns)] + [",".join(str(row[c]) for c in columns)
                                  for row in arm_table_rows(metrics)]
    return "\n".join(rows) + "\n"


def arm_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: group | arm | n_train | test accuracy (mean ± std) | 95% interval |
    Δ vs real | val accuracy | seeds (× replicates) | steps. The group is written on the first
    arm of each group only."""
    real = metrics["arms"].get("real", {}).get("accuracy_mean")
    rows, previous = [], None
    for row in arm_table_rows(metrics):
        source = metrics["arms"][row["arm"]]
        val = source.get("val_accuracy_mean")
        rows.append([row["group"] if row["group"] != previous else "", row["arm"],
                     str(row["n_train"]),
                     f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}",
                     _interval(source.get("ci95")),
                     "" if real is None or row["arm"] == "real"
                     else f"{row['accuracy_mean'] - real:+.4f}",
                     "" if val is None else f"{val:.4f}", _classifiers(source),
                     "" if source.get("steps") is None else str(source["steps"])])
        previous = row["group"]
    return ["group", "arm", "n_train", "test accuracy (mean ± std)", "95% interval",
            "Δ vs real", "val accuracy", "seeds (× replicates)", "steps"], rows


def _classifiers(row: dict[str, Any]) -> str:
    """How many classifiers an arm's numbers pool: `3`, or `3 × 2` over two replicates."""
    replicates = row.get("replicates") or []
    return f"{row['seeds']} × {len(replicates)}" if len(replicates) > 1 else str(row["seeds"])


def _interval(ci95: list[float] | None) -> str:
    """`[lo, hi]` of an accuracy interval, or empty when there is none."""
    return "" if not ci95 else f"[{ci95[0]:.4f}, {ci95[1]:.4f}]"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table, the first column left-aligned and the others right-aligned; cells
    escaped (pipes) and kept on one line."""
    lines = ["| " + " | ".join(_markdown_cell(cell) for cell in header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def arm_table_markdown(metrics: dict[str, Any]) -> str:
    """The arm table as markdown (for the UI's metadata and the CLI log)."""
    return markdown_table(*arm_table(metrics))


def _markdown_cell(text: Any) -> str:
    """A markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")
