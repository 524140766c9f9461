"""The stages after generation at growing scale: peak RSS and images/s per stage (prints JSON).

For each size (default 50,000 then 200,000 images) a cheap stand-in generator writes the
synthetic shards directly (real digits with a seeded shift and noise per sample, written by
`write_shard` with the sidecars `synthetic_shards` writes: the point is the stages after it).
Then each stage runs as a real Dagster materialization of the asset, in a fresh Python process
of its own so that its peak resident set size (`VmHWM`) is its own:

- `shard_scores`: every partition in one run (the judge loaded once);
- `filtered_set`: the decisions from the scores (threshold, top fraction, clustered dedup);
- `classifier_filtered`: one epoch of one seed on the kept samples, streamed from the shards
  (`runtime.in_memory_mb: 0`) through `--workers` loader processes.

Prints `{"sizes": [...], "stages": {"<stage>": {"peak_rss_mib": [...], "images_per_second":
[...], ...}}}` with, per stage, the RSS after imports (`rss_before_mib`), the peak of the loader
workers (`worker_peak_rss_mib`, classifier only; forked workers share the parent's pages, which
count in their RSS too) and `peak_ratio` (last size over first). With `--reuse`, a size whose
shards and judge exist in `--workdir` is not written again (each stage's output is removed
before it runs, so the stages are measured from scratch).

    python benchmarks/scale.py [--sizes 50000 200000] [--shard-size 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

STAGES = ("shard_scores", "filtered_set", "classifier_filtered")

# Runs in the child: imports, RSS before, one materialization, peak after (Linux: KiB).
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import dagster as dg
import yaml
from synthfactory.automation import all_shards_tags
from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params

def status_mib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")

config = parse_params(yaml.safe_load(Path(sys.argv[1]).read_text()))
stage = sys.argv[2]
defs = build_definitions(config)
keys = defs.get_assets_def("synthetic_shards").partitions_def.get_partition_keys()
import torch, safetensors, webdataset  # imported before the baseline: the steps import them
before = status_mib("VmRSS")
started = time.perf_counter()
result = dg.materialize(list(defs.assets), selection=[stage], resources=defs.resources,
                        tags=all_shards_tags(keys),
                        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
seconds = time.perf_counter() - started
assert result.success
metadata = result.get_asset_materialization_events()[0].materialization.metadata
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so a child started from a big
# parent reports the parent's size; VmHWM is this process's own peak since the exec.
peak = status_mib("VmHWM")
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
                  "worker_peak_rss_mib": round(workers, 1), "seconds": round(seconds, 2),
                  "metadata": {k: v.value for k, v in metadata.items()
                               if k in ("n_scored", "kept", "total", "n_train")}}))
"""


def stand_in_shards(store: Path, size: int, shard_size: int, seed: int = 0) -> float:
    """Write `size` stand-in synthetic images as shards; return the seconds it took."""
    from synthfactory.ops.data.digits import load_digits
    from synthfactory.ops.data.prompts import shard_key
    from synthfactory.ops.storage.shards import Sample, write_shard

    digits = load_digits(8, 1)
    started = time.perf_counter()
    directory = store / "synthetic_shards"
    for number, start in enumerate(range(0, size, shard_size)):
        generator = np.random.default_rng([seed, number])
        count = min(shard_size, size - start)
        picks = generator.integers(0, len(digits.images), count)
        shifts = generator.integers(-1, 2, (count, 2))
        noise = generator.normal(0, 12, (count, 8, 8, 1))
        samples = []
        for index in range(count):
            image = np.roll(digits.images[picks[index]], tuple(shifts[index]), axis=(0, 1))
            image = np.clip(image + noise[index], 0, 255).astype(np.uint8)
            label = int(digits.labels[picks[index]])
            samples.append(Sample(f"s{start + index:08d}", image, label,
                                  {"prompt": {"text": f"a handwritten digit {label}"}}))
        write_shard(directory / f"shard-{shard_key(number)}.tar", samples,
                    extra={"stand_in": True})
    return time.perf_counter() - started


def run_stage(params: Path, stage: str) -> dict:
    """One stage in a fresh process; its measurements."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(params), stage], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Each size: stand-in shards, then the three stages, each in its own process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--judge-epochs", type=int, default=3)
    parser.add_argument("--classifier-width", type=int, default=128)
    parser.add_argument("--workdir", default=None, help="default: a new temporary directory")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the stand-in shards and judge already in --workdir")
    args = parser.parse_args()

    import dagster as dg

    from synthfactory.definitions import build_definitions
    from synthfactory.params import parse_params

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sf-bench-scale-"))
    stages: dict[str, dict[str, list]] = {stage: {} for stage in args.stages}
    generation = []
    for size in args.sizes:
        root = workdir / f"size-{size}"
        raw = {"seed": 0, "store": {"root": str(root / "data")},
               "runtime": {"device": "cpu", "threads": args.threads, "workers": args.workers,
                           "in_memory_mb": 0},
               "prompts": {"images_per_class": size // 10},
               "synthetic_shards": {"shard_size": args.shard_size},
               "judge": {"epochs": args.judge_epochs},
               "filtered_set": {"threshold": 0.2, "top_fraction": 0.9, "dedup_threshold": 0.98},
               "classifiers": {"n_seeds": 1, "epochs": 1, "min_steps": 1,
                               "width": args.classifier_width},
               "eval_report": {"output_dir": str(root / "reports")}}
        params = root / "params.yaml"
        params.parent.mkdir(parents=True, exist_ok=True)
        params.write_text(yaml.safe_dump(raw))
        config = parse_params(raw)
        defs = build_definitions(config)
        reuse = args.reuse and (root / "data" / "judge").is_dir() and len(
            list((root / "data" / "synthetic_shards").glob("*.json"))) == -(-size // args.shard_size)
        if not reuse:
            upstream = dg.materialize(list(defs.assets), selection=["real_images", "judge"],
                                      resources=defs.resources, run_config={"loggers": {
                                          "console": {"config": {"log_level": "WARNING"}}}})
            assert upstream.success
            seconds = stand_in_shards(root / "data", size, args.shard_size)
            generation.append(round(size / seconds, 1))
        for stage in args.stages:
            shutil.rmtree(root / "data" / stage, ignore_errors=True)  # measured from scratch
            row = run_stage(params, stage)
            images = row["metadata"].get("n_scored") or row["metadata"].get("total") \
                or row["metadata"].get("n_train")
            row["images"] = images
            row["images_per_second"] = round(images / row["seconds"], 1)
            for key, value in row.items():
                if key != "metadata":
                    stages[stage].setdefault(key, []).append(value)
    for values in stages.values():
        values["peak_ratio"] = round(values["peak_rss_mib"][-1] / values["peak_rss_mib"][0], 3)
        increases = [peak - before for peak, before in zip(values["peak_rss_mib"],
                                                           values["rss_before_mib"], strict=True)]
        values["peak_increase_mib"] = [round(value, 1) for value in increases]
    print(json.dumps({
        "benchmark": "scale", "sizes": args.sizes, "stages": stages,
        "stand_in_generation_images_per_second": generation,
        "settings": {"shard_size": args.shard_size, "workers": args.workers,
                     "threads": args.threads, "resolution": 8, "classes": 10,
                     "judge": "convnet width 128", "classifier_width": args.classifier_width},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }, indent=2))


if __name__ == "__main__":
    main()
