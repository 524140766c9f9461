"""The arm table: one row per arm in a fixed order, as markdown, CSV (DVC's plot data) or rows."""

from __future__ import annotations

from typing import Any

ARM_ORDER = ("real", "synthetic", "filtered", "distilled")
ARMS_CSV = "arms.csv"  # the arm table as plot data (dvc.yaml declares it as a plot)


def ordered_arms(metrics: dict[str, Any]) -> list[str]:
    """The arms of a metrics dict: the known ones in ARM_ORDER, then any others sorted."""
    return [arm for arm in ARM_ORDER if arm in metrics["arms"]] + sorted(
        set(metrics["arms"]) - set(ARM_ORDER))


def arm_table_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: arm, n_train, accuracy_mean, accuracy_std, seeds."""
    return [{"arm": arm, **{key: metrics["arms"][arm][key] for key in
                            ("n_train", "accuracy_mean", "accuracy_std", "seeds")}}
            for arm in ordered_arms(metrics)]


def arm_table_csv(metrics: dict[str, Any]) -> str:
    """The arm table as CSV (arm, n_train, accuracy_mean, accuracy_std, seeds): DVC's plot data."""
    columns = ["arm", "n_train", "accuracy_mean", "accuracy_std", "seeds"]
    rows = [",".join(columns)] + [",".join(str(row[c]) for c in columns)
                                  for row in arm_table_rows(metrics)]
    return "\n".join(rows) + "\n"


def arm_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: arm | n_train | accuracy (mean ± std) | seeds | Δ vs real."""
    real = metrics["arms"].get("real", {}).get("accuracy_mean")
    rows = [[row["arm"], str(row["n_train"]),
             f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}", str(row["seeds"]),
             "" if real is None else f"{row['accuracy_mean'] - real:+.4f}"]
            for row in arm_table_rows(metrics)]
    return ["arm", "n_train", "accuracy (mean ± std)", "seeds", "Δ vs real"], rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table, the first column left-aligned and the others right-aligned; cells
    escaped (pipes) and kept on one line."""
    lines = ["| " + " | ".join(_cell(cell) for cell in header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def arm_table_markdown(metrics: dict[str, Any]) -> str:
    """The arm table as markdown (for the UI's metadata and the CLI log)."""
    return markdown_table(*arm_table(metrics))


def _cell(text: Any) -> str:
    """A markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")
