"""Peak memory of generation for 1× and 4× the images: streaming keeps it flat (prints JSON).

The upstream (real images, a briefly trained generator) is materialized once. Then, for each
size, a fresh Python process materializes `prompts` and every `synthetic_shards` partition
through Dagster, in-process, exactly as `synthfactory run` does, and reports its peak resident
set size (`ru_maxrss`) and its RSS just before the materialization (after imports and model-free
set-up). Samples go from the sampler to the tar writer one batch at a time, so the peak should
not grow with the number of images; `ratio_peak_increase` (4× over 1×) near 1.0 is the claim.

    python benchmarks/generation_memory.py [--params params.yaml] [--images 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# Runs in the child: RSS before, materialize, peak after. Linux reports ru_maxrss in KiB.
CHILD = r"""
import json, resource, sys
from pathlib import Path
import dagster as dg
import yaml
from synthfactory.definitions import build_definitions
from synthfactory.params import parse_params

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")

config = parse_params(yaml.safe_load(Path(sys.argv[1]).read_text()))
defs = build_definitions(config)
keys = defs.get_assets_def("synthetic_shards").partitions_def.get_partition_keys()
import torch, diffusers  # imported before the baseline: the step imports them anyway
before = rss_mib()
result = dg.materialize(
    list(defs.assets), selection=["prompts", "synthetic_shards"], resources=defs.resources,
    tags={"dagster/asset_partition_range_start": keys[0],
          "dagster/asset_partition_range_end": keys[-1]},
    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
assert result.success
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
n_shards = sum(1 for _ in (Path(config.store.root) / "synthetic_shards").glob("*.tar"))
print(json.dumps({"rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
                  "shards": n_shards}))
"""


def main() -> None:
    """Materialize the upstream once, then measure each size in its own fresh process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=int, default=1000, help="the 1× number of images")
    parser.add_argument("--train-steps", type=int, default=50,
                        help="generator training steps (memory does not depend on quality)")
    args = parser.parse_args()

    import dagster as dg

    from synthfactory.definitions import build_definitions
    from synthfactory.params import parse_params

    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    workdir = Path(tempfile.mkdtemp(prefix="sf-bench-memory-"))
    raw["store"] = {"root": str(workdir / "data")}
    raw.setdefault("generator", {}).setdefault("ddpm", {})["train_steps"] = args.train_steps
    config = parse_params(raw)
    defs = build_definitions(config)
    upstream = dg.materialize(list(defs.assets), selection=["real_images", "generator"],
                              resources=defs.resources,
                              run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    assert upstream.success
    n_classes = len(json.loads((workdir / "data" / "real_images" / "classes.json").read_text()))

    runs = {}
    for factor in (1, 4):
        images = args.images * factor
        sized = dict(raw, prompts={**raw.get("prompts", {}),
                                   "images_per_class": max(1, images // n_classes)})
        params = workdir / f"params-{factor}x.yaml"
        params.write_text(yaml.safe_dump(sized))
        done = subprocess.run([sys.executable, "-c", CHILD, str(params)], capture_output=True,
                              text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["images"] = (images // n_classes) * n_classes
        row["peak_increase_mib"] = round(row["peak_rss_mib"] - row["rss_before_mib"], 1)
        runs[f"{factor}x"] = row
    shards = config.params.synthetic_shards
    print(json.dumps({
        "benchmark": "generation_memory",
        "runs": runs,
        "ratio_peak_rss": round(runs["4x"]["peak_rss_mib"] / runs["1x"]["peak_rss_mib"], 3),
        "ratio_peak_increase": round(runs["4x"]["peak_increase_mib"]
                                     / runs["1x"]["peak_increase_mib"], 3),
        "settings": {"shard_size": shards.shard_size, "batch_size": shards.batch_size,
                     "steps": shards.steps, "resolution": config.params.real_images.resolution},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }, indent=2))


if __name__ == "__main__":
    main()
