"""The distillation table on the embedded digits (prints JSON).

Materializes the whole graph on `configs/digits-distillation-table.yaml` (every method at ipc 1
and 10, from the real train split and from the filtered synthetic set, 5 DSA-trained ConvNets
per cell) with the project's own CLI, then prints `metrics.json`'s `distillation_table` (test
accuracy, mean ± sample std over repeats × networks, its 95% interval, DD-Ranking scores, the
protocol, distillation seconds) and each cell's comparison against random, with each cell's
validation accuracy from `classifier_distilled/cells/<cell>/history.json` (the numbers choices are made on).

    python benchmarks/distillation_table.py [--params configs/digits-distillation-table.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    """Run the graph on the table params and print the table as JSON."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/digits-distillation-table.yaml")
    parser.add_argument("--skip-run", action="store_true",
                        help="only read the outputs of an earlier run")
    args = parser.parse_args()
    from synthfactory.params import load_params

    config = load_params(args.params)
    started = time.perf_counter()
    if not args.skip_run:
        subprocess.run([sys.executable, "-m", "synthfactory.cli", "run", "--params", args.params],
                       check=True, stdout=sys.stderr)
    metrics = json.loads((Path(config.params.eval_report.output_dir) / "metrics.json")
                         .read_text())
    rows = []
    for row in metrics["distillation_table"]:
        key = row["cell"]
        history = json.loads((config.store.path("classifier_distilled", "cells", key)
                              / "history.json").read_text())
        val = [m["val_accuracy"] for m in history["architectures"][row["architecture"]]]
        rows.append({**row, "val_accuracy_mean": float(np.mean(val)),
                     "val_accuracy_std": float(np.std(val, ddof=1)) if len(val) > 1 else 0.0})
    print(json.dumps({"benchmark": "distillation_table", "params": args.params,
                      "n_test": metrics["n_test"], "wall_seconds": round(
                          time.perf_counter() - started, 1), "table": rows,
                      # each learned cell against random: paired difference, interval, verdict
                      "against_random": [comparison for comparison in metrics["comparisons"]
                                         if comparison["kind"] == "distillation"]}, indent=2))


if __name__ == "__main__":
    main()
