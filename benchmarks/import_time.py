"""Import time of the code location against `import dagster` alone (prints JSON).

Each import runs in a fresh interpreter; the median of `--repeats` runs is compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def time_import(statement: str) -> float:
    """Wall seconds of a fresh `python -c statement`."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - started


def main() -> None:
    """Alternate the two imports `--repeats` times and print medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    dagster_only, definitions = [], []
    for _ in range(args.repeats):
        dagster_only.append(time_import("import dagster"))
        definitions.append(time_import("import synthfactory.definitions"))
    baseline, ours = statistics.median(dagster_only), statistics.median(definitions)
    print(json.dumps({
        "benchmark": "import_time", "repeats": args.repeats,
        "import_dagster_median_s": round(baseline, 3),
        "import_definitions_median_s": round(ours, 3),
        "definitions_over_dagster": round(ours / baseline, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
