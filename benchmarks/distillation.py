"""Distribution matching (`dm`) speed and memory at ipc 1, 10 and 50 (prints JSON).

Each ipc runs in a fresh process, as the `distilled_set` asset runs it: the store's filtered set
as the source (`make run` first; else the real train split), the seed the asset derives, and
`distilled_set.iterations`, `learning_rate` and `batch_real` of `--params`. What each figure is:

- `iterations`: the iterations dm ran (its loss history), `iterations_per_second` over dm alone.
- `peak_memory_mib`: on CPU, the peak resident set size while dm runs above the RSS just before
  it (the source loaded, torch imported): Linux's peak counter (VmHWM) is reset right before dm
  and read right after, so neither loading nor the evaluation below counts. On CUDA,
  `torch.cuda.max_memory_allocated` over dm alone.
- `matching_loss_fixed_nets`: Σ_c ‖mean embed(source_c) − mean embed(images_c)‖² on 8 fixed
  random ConvNets without augmentation, for the images dm starts from (the seeded random
  samples it is initialised with, passed to it explicitly) and for the images it returns.
- `seconds_to_converge`: until the moving average of dm's training loss first comes within 5%
  of its final value.

    python benchmarks/distillation.py [--store data] [--params params.yaml] [--ipc 1 10 50]
        [--iterations N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from memory import peak_rss_mib, reset_peak_rss


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


def run_one(store: Path, params_path: str, ipc: int, iterations: int | None,
            device_name: str) -> dict:
    """One dm run in this process, as the asset runs it; returns its measurements."""
    import torch

    from synthfactory.ops.distillation.coresets import select_random
    from synthfactory.ops.distillation.dm import distribution_matching, matching_loss
    from synthfactory.ops.seeds import derive_seed
    from synthfactory.params import load_params

    config = load_params(params_path)
    settings = config.params.distilled_set
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    images, labels, source = load_source(store)
    n_classes = int(labels.max()) + 1
    device = torch.device(device_name)
    seed = derive_seed(config.runtime.seed, "distilled_set")  # the asset's seed
    # dm's own default start, made explicit: the images the "initial" loss is measured on are
    # the images dm starts from.
    start = select_random(labels, ipc, derive_seed(seed, "init"))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / 2**20
    else:
        baseline = reset_peak_rss()
    started = time.perf_counter()
    distilled, distilled_labels, history = distribution_matching(
        images, labels, n_classes, ipc, seed=seed, device=device,
        iterations=settings.iterations if iterations is None else iterations,
        learning_rate=settings.learning_rate, batch_real=settings.batch_real,
        init_indices=start)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else peak_rss_mib() - baseline)
    ran = len(history["loss"])
    yardstick = {"seed": 1, "n_nets": 8, "device": device, "width": 128, "depth": None}
    initial = matching_loss(images, labels, images[start], labels[start], n_classes,
                            **yardstick)
    final = matching_loss(images, labels, distilled, distilled_labels, n_classes, **yardstick)
    return {"ipc": ipc, "source": source, "source_images": len(images),
            "iterations": ran, "seconds": round(seconds, 2),
            "iterations_per_second": round(ran / seconds, 2),
            "seconds_to_converge": round(seconds_to_converge(history["loss"], seconds / ran), 2),
            "peak_memory_mib": round(peak, 1),
            "peak_memory_baseline_mib": round(baseline, 1),
            "torch_threads": torch.get_num_threads(),
            "matching_loss_fixed_nets": {"initial_images": round(initial, 4),
                                         "distilled": round(final, 4)}}


def main() -> None:
    """Run every ipc in its own process and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="data")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--iterations", type=int, default=None,
                        help="default: distilled_set.iterations of --params")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(Path(args.store), args.params, args.one, args.iterations,
                                 args.device)))
        return
    runs = []
    for ipc in args.ipc:
        command = [sys.executable, __file__, "--store", args.store, "--params", args.params,
                   "--device", args.device, "--one", str(ipc)]
        if args.iterations is not None:
            command += ["--iterations", str(args.iterations)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    import torch

    print(json.dumps({"benchmark": "distribution_matching", "device": args.device,
                      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                 f"torch {torch.__version__}",
                      "date": datetime.date.today().isoformat(), "runs": runs}, indent=2))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
