"""Iterations/s of our dm, dc and mtt beside the reference implementations (prints JSON).

The references are run as they are, from checkouts you provide (nothing of them is in this
repository): VICO-UoE/DatasetCondensation (`main_DM.py`, `main.py --method DSA`) and
GeorgeCazenavette/mtt-distillation (`buffer.py`, `distill.py`). They import torchvision, which
does not import beside the CPU torch wheel of this project's venv: give `--python` of a venv with
`torch` and `torchvision` (e.g. `pip install torch==2.14.1 torchvision==0.29.1 scipy tqdm kornia
wandb`); ours runs in that same interpreter (with `PYTHONPATH=src`), so both use one torch.

The same data for both: the project's digits split (train without validation), grey replicated
to 3 channels, because with one channel the references' ConvNet pads its first convolution by 3
(a layout for 28 px MNIST) and their `ConvNetD2` no longer fits 8 px; with 3 channels their
`ConvNetD2` is exactly our depth-2 ConvNet (width 128, instance norm, average pooling). The same
hyperparameters (the references' defaults where they have them: batch_real 256, their outer/inner
loops for dc, syn_steps 20 for mtt), DSA without flip, one torch thread, the same CPU, run one
after the other. The adapter (`--adapter`) replaces only their data loader (`utils.get_dataset`),
their log clock (`utils.get_time`, so their own `iter = N` lines time the iterations), wraps
`utils.evaluate_synset` to stamp its start (evaluations are excluded), makes `Tensor.cuda` a no-op
without a GPU (their distill.py calls it unconditionally) and disables wandb.

    python benchmarks/distillation_reference.py --dc-repo ~/DatasetCondensation \\
        --mtt-repo ~/mtt-distillation --python /tmp/refvenv/bin/python [--work /tmp/ddref]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

# The interpreter of the references' venv does not have this package installed: use the source.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
STRATEGY = "color_crop_cutout_scale_rotate"
# (method, ipc, reference iterations, our iterations): enough logged iterations to time. dm and
# dc at ipc 1 do not run in the references on current torch: their siamese DSA copies a batch's
# first parameters with `x[:] = x[0]`, which torch refuses when the batch is one image
# ("some elements of the input tensor and the written-to tensor refer to a single memory
# location"); mtt draws per image and runs at ipc 1.
CASES = [("dm", 10, 40, 30), ("mtt", 1, 30, 20), ("mtt", 10, 20, 10), ("dc", 10, 3, 2),
         ("dm", 1, 40, 30), ("dc", 1, 40, 30)]


def write_data(path: Path) -> None:
    """The project's digits split as uint8 arrays: train (without validation) and validation."""
    from synthfactory.ops.data.digits import load_digits
    from synthfactory.ops.data.splits import carve_validation, stratified_split

    data = load_digits(8, 1)
    train, _ = stratified_split(data.labels, 0.3, 0)
    train, val = carve_validation(data.labels, train, 0.1, 0)
    import numpy as np

    np.savez(path, x_train=data.images[train][..., 0], y_train=data.labels[train],
             x_test=data.images[val][..., 0], y_test=data.labels[val])


def adapter(repo: str, script: str, args: list[str], data_path: str) -> None:
    """Run a reference script unchanged on the digits arrays (see the module docstring)."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, repo)
    import utils  # the reference's own module

    arrays = np.load(data_path)

    def tensors(split: str, mean: float, std: float) -> tuple:
        x = torch.from_numpy(arrays[f"x_{split}"]).float().div(255).unsqueeze(1)
        return ((x - mean) / std).repeat(1, 3, 1, 1), torch.from_numpy(arrays[f"y_{split}"]).long()

    def get_dataset(*_: object, **__: object) -> tuple:
        raw = torch.from_numpy(arrays["x_train"]).float().div(255)
        mean, std = float(raw.mean()), float(raw.std())
        train, test = (utils.TensorDataset(*tensors(s, mean, std)) for s in ("train", "test"))
        loader = torch.utils.data.DataLoader(test, batch_size=256, shuffle=False)
        common = (3, (8, 8), 10, [str(c) for c in range(10)], [mean] * 3, [std] * 3, train,
                  test, loader)
        return common + ((None, {c: c for c in range(10)}, None) if "mtt" in script_kind
                         else ())

    evaluate = utils.evaluate_synset

    def stamped_evaluate(*a: object, **k: object) -> object:
        print(f"[adapter] evaluate_synset t={time.perf_counter():.4f}", flush=True)
        return evaluate(*a, **k)

    script_kind = "mtt" if (Path(repo) / "reparam_module.py").is_file() else "dc"
    utils.get_dataset = get_dataset
    utils.get_time = lambda: f"[t={time.perf_counter():.4f}]"
    utils.evaluate_synset = stamped_evaluate
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
    sys.argv = [script, *args]
    runpy.run_path(str(Path(repo) / script), run_name="__main__")


def rate_from_log(text: str, eval_iteration: int | None = None) -> dict:
    """Iterations/s between their first `iter = N` line and the last one before an evaluation
    (or, with one line only, the evaluation that follows at `eval_iteration`)."""
    events = []
    for line in text.splitlines():
        if match := re.search(r"\[t=([\d.]+)\] iter = (\d+)", line):
            events.append(("iter", float(match[1]), int(match[2])))
        elif match := re.search(r"evaluate_synset t=([\d.]+)", line):
            events.append(("eval", float(match[1]), None))
    iters = [e for e in events if e[0] == "iter"]
    first, last = iters[0], iters[0]
    end = None
    for event in events[events.index(first) + 1:]:
        if event[0] == "eval":
            end = event
            break
        last = event
    if last is first and end is not None and eval_iteration is not None:
        count, seconds = eval_iteration - 1 - first[2], end[1] - first[1]
    else:
        count, seconds = last[2] - first[2], last[1] - first[1]
    return {"iterations": count, "seconds": round(seconds, 3),
            "iterations_per_second": round(count / seconds, 4)}


def ours(method: str, ipc: int, iterations: int, data_path: str, work: Path) -> dict:
    """Our implementation with the same settings, in this interpreter."""
    import numpy as np
    import torch

    from synthfactory.ops.distillation.dsa import DSA
    from synthfactory.ops.distillation.matching import (DcSettings, DmSettings,
                                                        distribution_matching, gradient_matching)
    from synthfactory.ops.distillation.trajectories import (MttSettings, train_expert,
                                                            trajectory_matching)

    torch.set_num_threads(1)
    arrays = np.load(data_path)
    images = np.repeat(arrays["x_train"][..., None], 3, axis=3)
    labels = arrays["y_train"].astype(np.int64)
    cpu, dsa = torch.device("cpu"), DSA(fill=0.0)
    common = {"seed": 0, "device": cpu}
    if method == "dm":
        run = lambda n: distribution_matching(  # noqa: E731
            images, labels, 10, ipc, DmSettings(iterations=n, batch_real=256, dsa=dsa), **common)
    elif method == "dc":
        run = lambda n: gradient_matching(  # noqa: E731
            images, labels, 10, ipc, DcSettings(iterations=n, batch_real=256, outer_loop=None,
                                                inner_loop=None, dsa=dsa), **common)
    else:
        experts_path = work / "our_experts.npy"
        if not experts_path.is_file():
            np.save(experts_path, np.stack([train_expert(
                images, labels, 10, seed=s, device=cpu, epochs=12, batch_size=256,
                dsa=dsa)[0] for s in range(2)]))
        experts = list(np.load(experts_path))
        run = lambda n: trajectory_matching(  # noqa: E731
            images, labels, 10, ipc, experts,
            MttSettings(iterations=n, syn_steps=20, expert_epochs=2, max_start_epoch=10,
                        learning_rate=100.0, dsa=dsa), **common)
    run(1)  # warm-up, as their first (untimed) logged iteration
    started = time.perf_counter()
    run(iterations)
    seconds = time.perf_counter() - started
    return {"iterations": iterations, "seconds": round(seconds, 3),
            "iterations_per_second": round(iterations / seconds, 4)}


def reference_command(method: str, ipc: int, iterations: int, work: Path) -> tuple[str, list[str]]:
    """Their script and arguments for one case (their defaults unless named)."""
    common = ["--dataset", "digits", "--model", "ConvNetD2", "--ipc", str(ipc),
              "--dsa_strategy", STRATEGY, "--data_path", str(work / "data")]
    if method == "dm":
        return "main_DM.py", common + ["--Iteration", str(iterations), "--num_exp", "1",
                                       "--num_eval", "1", "--epoch_eval_train", "1",
                                       "--eval_mode", "X", "--init", "real",
                                       "--save_path", str(work / "res")]
    if method == "dc":
        return "main.py", common + ["--method", "DSA", "--Iteration", str(iterations),
                                    "--num_exp", "1", "--num_eval", "1", "--eval_mode", "X",
                                    "--init", "real", "--save_path", str(work / "res")]
    return "distill.py", common + ["--syn_steps", "20", "--expert_epochs", "2",
                                   "--max_start_epoch", "10", "--lr_img", "100",
                                   "--lr_lr", "1e-05", "--lr_teacher", "0.01",
                                   "--Iteration", str(iterations), "--eval_it", "100000",
                                   "--num_eval", "1", "--epoch_eval_train", "2",
                                   "--buffer_path", str(work / "buffers")]


def main() -> None:
    """Run every case, theirs then ours, and print one JSON document with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dc-repo")
    parser.add_argument("--mtt-repo")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--work", default="/tmp/synthfactory-ddref")
    parser.add_argument("--cases", nargs="+", default=[f"{m}{i}" for m, i, _, _ in CASES],
                        help="e.g. dm10 mtt1 mtt10 dc10 (default: all, dm1 and dc1 included)")
    parser.add_argument("--adapter", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--ours", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    data = str(work / "digits.npz")
    if args.adapter:
        adapter(args.adapter[0], args.adapter[1], args.adapter[2:], data)
        return
    if args.ours:
        print(json.dumps(ours(args.ours[0], int(args.ours[1]), int(args.ours[2]), data, work)))
        return
    work.mkdir(parents=True, exist_ok=True)
    write_data(Path(data))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
           "OMP_WAIT_POLICY": "PASSIVE", "WANDB_MODE": "disabled"}
    me = str(Path(__file__).resolve())
    version = subprocess.run([args.python, "-c", "import torch; print(torch.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()
    results = []
    for method, ipc, ref_iterations, our_iterations in CASES:
        if f"{method}{ipc}" not in args.cases:
            continue
        repo = args.mtt_repo if method == "mtt" else args.dc_repo
        if method == "mtt" and not (work / "buffers" / "digits" / "ConvNetD2").is_dir():
            subprocess.run([args.python, me, "--work", str(work), "--adapter", repo, "buffer.py",
                            "--dataset", "digits", "--model", "ConvNetD2", "--num_experts", "2",
                            "--train_epochs", "12", "--save_interval", "2", "--buffer_path",
                            str(work / "buffers"), "--data_path", str(work / "data"),
                            "--dsa_strategy", STRATEGY], check=True, env=env, cwd=work,
                           capture_output=True)
        script, script_args = reference_command(method, ipc, ref_iterations, work)
        done = subprocess.run([args.python, me, "--work", str(work), "--adapter", repo, script,
                               *script_args], env=env, cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            error = done.stderr.strip().splitlines()[-1]
            results.append({"method": method, "ipc": ipc, "reference_failed": error})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            continue
        theirs = rate_from_log(done.stdout, ref_iterations)
        mine = json.loads(subprocess.run(
            [args.python, me, "--work", str(work), "--ours", method, str(ipc),
             str(our_iterations)], check=True, env=env, capture_output=True,
            text=True).stdout.strip().splitlines()[-1])
        results.append({"method": method, "ipc": ipc, "reference": theirs, "ours": mine,
                        "ratio_ours_over_reference": round(
                            mine["iterations_per_second"] / theirs["iterations_per_second"], 3)})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "distillation_reference", "torch": version, "device": "cpu",
                      "threads": 1, "data": "digits train split (1132 images), 3 channels",
                      "dsa_strategy": STRATEGY, "cases": results}, indent=2))


if __name__ == "__main__":
    main()
