"""Classifier training throughput: streamed from shards against the in-memory loop (prints JSON).

The embedded default's synthetic arm is 1000 digit images of 8×8 in 4 shards of 250, trained
with the default recipe (ConvNet width 128, batch 128, augmentation). Here the digits themselves
stand in for generated ones (throughput does not depend on what the pixels show). Each repeat
trains the same number of steps twice, interleaved: once from the arrays in memory (the default
path for a set this small) and once streamed from the shards through the DataLoader (`workers`
processes, a shuffle buffer of `shuffle_buffer`), which is what every set above
`runtime.in_memory_mb` and every DDP rank uses. `ratio` is streamed / in-memory images per
second; the goal is ≥ 0.9. `cpu_seconds_per_1000_images` adds the loader workers' CPU time to
the main process's: when the cores are busy with other work, that extra CPU is what streaming
costs in throughput.

    python benchmarks/streaming_throughput.py [--steps 150] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.storage.shards import Sample, write_shard
from synthfactory.ops.training.shardrefs import shard_refs
from synthfactory.ops.training.shardsets import ShardSet
from synthfactory.ops.training.sources import InMemorySource
from synthfactory.ops.training.train import ClassifierSettings, train_classifier


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children (the loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Interleave in-memory and streamed training runs of equal steps; print images/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shuffle-buffer", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    digits = load_digits(8, 1)
    with tempfile.TemporaryDirectory() as root:
        paths = []
        for number in range(4):  # the default: 1000 images, shards of 250
            path = Path(root) / f"shard-{number:05d}.tar"
            write_shard(path, (Sample(f"s{i:05d}", digits.images[i], int(digits.labels[i]))
                               for i in range(number * 250, (number + 1) * 250)))
            paths.append(path)
        shard_set = ShardSet(shard_refs(paths), (8, 8, 1))
        images, labels, _ = shard_set.arrays()
        recipe = dict(epochs=1, min_steps=args.steps, batch_size=128, width=128)
        rates: dict[str, list[float]] = {"memory": [], "stream": []}
        cpu: dict[str, list[float]] = {"memory": [], "stream": []}
        for repeat in range(args.repeats):
            for mode in ("memory", "stream"):
                source = (InMemorySource(images, labels) if mode == "memory" else
                          shard_set.source(in_memory_mb=0, seed=repeat, workers=args.workers,
                                           shuffle_buffer=args.shuffle_buffer))
                started, cpu_started = time.perf_counter(), _cpu_seconds()
                # Includes starting the loader workers and the training-accuracy pass of each.
                train_classifier(source, None, 10, ClassifierSettings(**recipe), seed=repeat,
                                 device=device)
                seconds = time.perf_counter() - started
                rates[mode].append(round(args.steps * 128 / seconds, 1))
                # CPU of this process and of its finished loader workers, per 1000 images.
                cpu[mode].append(round((_cpu_seconds() - cpu_started) / (args.steps * 128)
                                       * 1000, 3))
    ratios = [s / m for s, m in zip(rates["stream"], rates["memory"], strict=True)]
    print(json.dumps({
        "benchmark": "streaming_throughput", "steps": args.steps, "batch_size": 128,
        "workers": args.workers, "shuffle_buffer": args.shuffle_buffer, "threads": args.threads,
        "device": args.device, "memory_images_per_second": rates["memory"],
        "stream_images_per_second": rates["stream"],
        "ratio_median": round(statistics.median(ratios), 3),
        "cpu_seconds_per_1000_images": cpu,
        "ratio_of_medians": round(statistics.median(rates["stream"])
                                  / statistics.median(rates["memory"]), 3),
        "torch": torch.__version__, "machine": platform.machine(),
        "cpus": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
