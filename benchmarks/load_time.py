"""How long the code location takes to load (prints JSON).

Three timings, each in fresh processes, median of `--repeats`, interleaved so that machine load
hits them alike:

- `import_dagster`: `python -c "import dagster"`, the floor no code location can go under;
- `code_location`: import `synthfactory.definitions` and resolve its repository (every asset,
  check, job, schedule and sensor): what a code server does when it loads the location;
- `definitions_validate`: `dagster definitions validate -m synthfactory.definitions`, which also
  starts the dagster CLI and opens the instance (DAGSTER_HOME: the project's dagster_home/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = ("import synthfactory.definitions as d; r = d.defs.get_repository_def(); "
        "r.get_all_jobs(); r.schedule_defs; r.sensor_defs")


def wall(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one command (which must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    """Interleave the three commands `--repeats` times and print their medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "DAGSTER_HOME": str(ROOT / "dagster_home")}
    dagster = str(Path(sys.executable).with_name("dagster"))
    commands = {
        "import_dagster": [sys.executable, "-c", "import dagster"],
        "code_location": [sys.executable, "-c", LOAD],
        "definitions_validate": [dagster, "definitions", "validate", "-m",
                                 "synthfactory.definitions"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            times[name].append(wall(command, env))
    result = {"benchmark": "load_time", "repeats": args.repeats}
    for name, values in times.items():
        result[f"{name}_median_s"] = round(statistics.median(values), 3)
        result[f"{name}_min_s"] = round(min(values), 3)
    result["code_location_over_import_dagster"] = round(
        result["code_location_median_s"] / result["import_dagster_median_s"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
