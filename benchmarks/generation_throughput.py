"""Throughput of the `synthetic_shards` asset against a bare sampling loop (prints JSON).

Both sides use the same trained generator, the same prompt records, batch size, sampler and
steps. The bare loop calls the model and scheduler directly: no Dagster, no PNG encoding, no tar,
no store. The asset side is a real in-process materialization of every shard partition. Runs are
interleaved; the ratio of the best of `--repeats` runs is the headline, and the ratio of the
medians is printed too.

    python benchmarks/generation_throughput.py [--params params.yaml] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from shard_runs import ShardRuns
from synthfactory.ops.generation.ddpm import DdpmGenerator
from synthfactory.params import parse_params


def main() -> None:
    """Materialize the upstream once, then time asset and bare loop alternately."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=50,
                        help="generator training steps (throughput does not depend on quality)")
    args = parser.parse_args()

    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    workdir = Path(tempfile.mkdtemp(prefix="sf-bench-"))
    raw["store"] = {"root": str(workdir / "data")}
    raw.setdefault("generator", {}).setdefault("ddpm", {})["train_steps"] = args.train_steps
    config = parse_params(raw)
    runs = ShardRuns(config)
    settings = config.params.synthetic_shards
    records = runs.records()
    runtime = config.runtime
    if runtime.threads:
        torch.set_num_threads(runtime.threads)

    def bare_loop() -> float:
        started = time.perf_counter()
        model = DdpmGenerator(workdir / "data" / "generator", runtime.torch_device,
                              runtime.torch_dtype)
        for shard_start in range(0, len(records), settings.shard_size):
            shard = records[shard_start:shard_start + settings.shard_size]
            for start in range(0, len(shard), settings.batch_size):
                batch = shard[start:start + settings.batch_size]
                model.sample([r.class_id for r in batch], [r.seed for r in batch],
                             [r.guidance for r in batch], settings.steps, settings.scheduler)
        return time.perf_counter() - started

    def asset_run() -> float:
        return runs.materialize_shards()[1]

    bare_seconds, asset_seconds = [], []
    for _ in range(args.repeats):
        bare_seconds.append(bare_loop())
        asset_seconds.append(asset_run())
    n_images = len(records)
    bare_ips = n_images / min(bare_seconds)
    asset_ips = n_images / min(asset_seconds)
    print(json.dumps({
        "benchmark": "generation_throughput",
        "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads, "
                   f"device {runtime.torch_device}",
        "images": n_images, "shards": len(runs.shard_keys), "batch_size": settings.batch_size,
        "steps": settings.steps, "scheduler": settings.scheduler,
        "bare_loop_seconds": [round(s, 2) for s in bare_seconds],
        "asset_seconds": [round(s, 2) for s in asset_seconds],
        "bare_loop_images_per_second": round(bare_ips, 1),
        "asset_images_per_second": round(asset_ips, 1),
        "asset_over_bare": round(asset_ips / bare_ips, 3),
        # The medians say how a typical run compares on a noisy, shared machine.
        "asset_over_bare_median": round(statistics.median(bare_seconds) /
                                        statistics.median(asset_seconds), 3),
        "note": "asset time includes Dagster run start, model load, PNG encoding, tar writing, "
                "sha256 and sidecars; bare loop includes model load only",
    }, indent=2))


if __name__ == "__main__":
    main()
