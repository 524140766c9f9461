"""Speed and memory of each learned distillation method per ipc (prints JSON).

Each (method, ipc) runs in a fresh process, so its peak memory is its own: on CPU the peak RSS
while the method runs minus the RSS just before it (Linux's peak counter is reset after the
data is loaded and mtt's experts are trained, and read before the matching loss below is
evaluated: `memory.py`), on CUDA `torch.cuda.max_memory_allocated` over the method alone.
`iterations` are those the method ran (its loss history). Data: the digits train split of
the project (train without validation, 1132 images), the params' method settings
(`distilled_set.dm/dc/mtt`), DSA as the params say. mtt's experts are trained first
(`expert_trajectories` settings) and not timed. For dm the matching loss on 8 fixed random
ConvNets is given for the images dm starts from and for the learned ones.

    python benchmarks/distillation.py [--params params.yaml] [--methods dm dc mtt]
        [--ipc 1 10 50] [--iterations N (default: the params')]
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

import numpy as np

from memory import peak_rss_mib, reset_peak_rss


def digits_train() -> tuple[np.ndarray, np.ndarray]:
    """The project's digits train split (the validation part carved out), uint8 N×8×8×1."""
    from synthfactory.ops.data.digits import load_digits
    from synthfactory.ops.data.splits import carve_validation, stratified_split

    data = load_digits(8, 1)
    train, _ = stratified_split(data.labels, 0.3, 0)
    train, _ = carve_validation(data.labels, train, 0.1, 0)
    return data.images[train], data.labels[train]


def run_one(params_path: str, method: str, ipc: int, iterations: int | None, device_name: str
            ) -> dict:
    """One method at one ipc in this process; returns its measurements."""
    import torch

    from synthfactory.ops.distillation.dsa import DSA
    from synthfactory.ops.distillation.matching import (DcSettings, DmSettings,
                                                        distribution_matching,
                                                        gradient_matching, matching_loss)
    from synthfactory.ops.distillation.trajectories import (MttSettings, train_expert,
                                                            trajectory_matching)
    from synthfactory.params import load_params

    config = load_params(params_path).params
    distill, experts_config = config.distilled_set, config.expert_trajectories
    images, labels = digits_train()
    device = torch.device(device_name)
    dsa = DSA(strategy=distill.dsa.strategy, fill=distill.dsa.fill)
    settings = dict(getattr(distill, method).model_dump())
    if iterations is not None:
        settings["iterations"] = iterations
    settings.update(dsa=dsa, width=distill.eval.width)
    experts = []
    if method == "mtt":
        settings.pop("final_max_start_epoch")
        settings.pop("label_learning_rate")
        experts = [train_expert(images, labels, 10, seed=s, device=device,
                                epochs=experts_config.epochs,
                                learning_rate=experts_config.learning_rate,
                                batch_size=experts_config.batch_size, dsa=dsa)[0]
                   for s in range(experts_config.experts)]
    if method == "dm":
        settings.pop("features")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline = reset_peak_rss()  # loading and mtt's experts are behind us
    started = time.perf_counter()
    if method == "dm":
        result = distribution_matching(images, labels, 10, ipc, DmSettings(**settings), seed=0,
                                       device=device)
    elif method == "dc":
        result = gradient_matching(images, labels, 10, ipc, DcSettings(**settings), seed=0,
                                   device=device)
    else:
        result = trajectory_matching(images, labels, 10, ipc, experts, MttSettings(**settings),
                                     seed=0, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else peak_rss_mib() - baseline)
    ran = len(result.history["loss"])  # what ran, not what was asked
    row = {"method": method, "ipc": ipc, "iterations": ran, "seconds": round(seconds, 2),
           "iterations_per_second": round(ran / seconds, 3),
           "peak_memory_increase_mib": round(peak, 1)}
    if method == "dm":
        start = np.asarray(result.history["init"])
        row["matching_loss_fixed_nets"] = {
            "start_images": round(matching_loss(images, labels, images[start], labels[start], 10,
                                                seed=1, n_nets=8, device=device), 4),
            "learned": round(matching_loss(images, labels, result.images, result.labels, 10,
                                           seed=1, n_nets=8, device=device), 4)}
    return row


def main() -> None:
    """Run every (method, ipc) in its own process and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--methods", nargs="+", default=["dm", "dc", "mtt"])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one is not None:
        print(json.dumps(run_one(args.params, args.one[0], int(args.one[1]), args.iterations,
                                 device)))
        return
    runs = []
    for method in args.methods:
        for ipc in args.ipc:
            command = [sys.executable, __file__, "--params", args.params, "--device", device,
                       "--one", method, str(ipc)]
            if args.iterations is not None:
                command += ["--iterations", str(args.iterations)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "distillation", "device": device, "threads": 1,
                      "torch": torch.__version__, "date": datetime.date.today().isoformat(),
                      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": runs},
                     indent=2))


if __name__ == "__main__":
    main()
