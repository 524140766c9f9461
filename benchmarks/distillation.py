"""Distribution matching (`dm`) speed and memory at ipc 1, 10 and 50 (prints JSON).

Each ipc runs in a fresh process so its peak memory is its own: peak RSS on CPU (the increase
over the process's RSS once the data is loaded), `torch.cuda.max_memory_allocated` on CUDA.
Source data: the filtered set of the store (`make run` first), else the real train split.
"Seconds to converge" is the time until the smoothed matching loss first comes within 5% of its
final value.

    python benchmarks/distillation.py [--store data] [--iterations 1000] [--ipc 1 10 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_source(store: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The filtered set if the store has one, else the real train split."""
    from synthfactory.ops.evaluation.arms import filtered_arm, real_arm

    if (store / "filtered_set" / "manifest.jsonl").is_file():
        data = filtered_arm(store / "synthetic_shards", store / "filtered_set")
        return data.images, data.labels, "filtered_set"
    data = real_arm(store / "real_images")
    return data.images, data.labels, "real_images train split"


def seconds_to_converge(losses: list[list[float]], seconds_per_iteration: float) -> float:
    """Seconds until the moving average of the loss is within 5% of its final value."""
    values = np.array([value for _, value in losses])
    iterations = np.array([iteration for iteration, _ in losses])
    window = max(1, len(values) // 20)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    target = smooth[-1] * 1.05
    first = int(np.argmax(smooth <= target))
    return float(iterations[first + window - 1] + 1) * seconds_per_iteration


def run_one(store: Path, ipc: int, iterations: int, device_name: str) -> dict:
    """One DM run in this process; returns its measurements."""
    import torch

    from synthfactory.ops.distillation.dm import distribution_matching, matching_loss

    images, labels, source = load_source(store)
    n_classes = int(labels.max()) + 1
    device = torch.device(device_name)
    baseline = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    distilled, distilled_labels, history = distribution_matching(
        images, labels, n_classes, ipc, seed=0, device=device, iterations=iterations)
    seconds = time.perf_counter() - started
    # The loss of the initial images (real samples) vs the learned ones, on fixed random nets.
    start = _first_per_class(labels, ipc)
    initial = matching_loss(images, labels, images[start], labels[start], n_classes, seed=1, n_nets=8,
                            device=device, width=128, depth=None)
    final = matching_loss(images, labels, distilled, distilled_labels, n_classes, seed=1,
                          n_nets=8, device=device, width=128, depth=None)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else peak_rss_mb() - baseline)
    return {"ipc": ipc, "source": source, "source_images": len(images),
            "iterations": iterations, "seconds": round(seconds, 2),
            "iterations_per_second": round(iterations / seconds, 2),
            "seconds_to_converge": round(seconds_to_converge(history["loss"],
                                                             seconds / iterations), 2),
            "peak_memory_mib": round(peak, 1),
            "matching_loss_fixed_nets": {"initial_images": round(initial, 4),
                                         "distilled": round(final, 4)}}


def _first_per_class(labels: np.ndarray, ipc: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:ipc] for c in np.unique(labels)])


def main() -> None:
    """Run every ipc in its own process and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="data")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(Path(args.store), args.one, args.iterations, args.device)))
        return
    runs = []
    for ipc in args.ipc:
        out = subprocess.run([sys.executable, __file__, "--store", args.store, "--iterations",
                              str(args.iterations), "--device", args.device, "--one", str(ipc)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "distribution_matching", "device": args.device,
                      "runs": runs}, indent=2))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
