"""Classifiers trained with DistributedDataParallel over several devices, launched with torchrun.

`train_distributed` writes a job file (the shards, their keep masks as safetensors, the recipe,
the seeds) and runs `torchrun --standalone --nproc_per_node N -m synthfactory.ops.training.distributed JOB`
from the calling step. Each of the N processes joins one process group (NCCL on CUDA, one GPU
per process; gloo on CPU), streams its own share of the shards (`sources.ShardSource` with its
rank), and trains every seed with the same global batch, steps and learning rate as one process
would, its gradients averaged across the group by DDP. Rank 0 writes `seed-<k>.safetensors`
and each rank its history beside the job file; the launcher returns rank 0's histories after the
group has finished.
BatchNorm layers become SyncBatchNorm on CUDA (statistics over the global batch); on CPU,
where torch has no SyncBatchNorm, each rank normalises with its own share of the batch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.storage.atomic import dumps_json, write_json_atomic
from synthfactory.ops.training.recipes import PrecisionPlan
from synthfactory.ops.training.shardrefs import ShardRef
from synthfactory.ops.training.shardsets import ShardSet

JOB_JSON = "job.json"
MASKS = "masks.safetensors"


@dataclass(frozen=True)
class Recipe:
    """The arguments of `train_classifier` that a DDP job passes through."""

    epochs: int = 30
    min_steps: int = 300
    batch_size: int = 128
    learning_rate: float = 0.01
    width: int | None = 128  # None: follows the resolution (architectures.default_width)
    architecture: str = "convnet"
    augmentation: bool = True
    flip: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    steps: int | None = None  # a shared budget's steps (train.ClassifierSettings.steps)
    # The precision plan as plain values (the job file is JSON): see recipes.PrecisionPlan.
    autocast: str | None = None
    channels_last: bool = False


def write_job(directory: Path, shard_set: ShardSet, *, n_classes: int, seeds: list[int],
              stream_seeds: list[int], recipe: Recipe, workers: int, shuffle_buffer: int,
              out_dir: Path, threads: int | None, deterministic: bool = True) -> Path:
    """The job file the worker processes read (keep masks in a safetensors file beside it);
    `deterministic` is `runtime.deterministic`, applied in every worker process."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    masks = {str(index): shard.keep for index, shard in enumerate(shard_set.shards)
             if shard.keep is not None}
    if masks:
        save_file({key: np.ascontiguousarray(mask) for key, mask in masks.items()},
                  str(directory / MASKS))
    job = {"shards": [{"path": str(shard.path), "count": shard.count}
                      for shard in shard_set.shards],
           "image_shape": list(shard_set.image_shape), "soft": shard_set.soft,
           "n_targets": shard_set.n_targets, "n_classes": n_classes, "seeds": seeds,
           "stream_seeds": stream_seeds, "recipe": asdict(recipe), "workers": workers,
           "shuffle_buffer": shuffle_buffer, "out_dir": str(out_dir), "threads": threads,
           "deterministic": deterministic}
    write_json_atomic(directory / JOB_JSON, job)
    return directory / JOB_JSON


def train_distributed(job: Path, *, devices: int, log: Callable[[str], None] | None = None,
                      timeout: float | None = None) -> list[dict[str, Any]]:
    """Run the job on `devices` processes with torchrun; return rank 0's history per seed.

    A failed process fails the whole group (torchrun stops the others); the error names the
    exit code and shows the end of the processes' output.
    """
    spec = json.loads(job.read_text())
    batch_size = min(spec["recipe"]["batch_size"], sum(s["count"] for s in spec["shards"]))
    if batch_size % devices:
        raise ValueError(f"classifiers.batch_size {batch_size} must be a multiple of "
                         f"runtime.devices {devices} (each device takes an equal share)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={devices}", "-m", "synthfactory.ops.training.distributed",
               str(job)]
    env = dict(os.environ)
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip())
            if log is not None and line.startswith("[rank0]"):
                log(line.rstrip())
        code = process.wait(timeout=timeout)
    if code != 0:
        # torchrun prefixes each rank's traceback with `[rankN]:`; its last line is the error.
        errors = [line for line in output if re.match(r"\[rank\d+\]: \w+(Error|Exception)", line)]
        tail = "\n".join(output[-30:])
        raise RuntimeError(f"DDP training on {devices} processes failed (torchrun exit code "
                           f"{code}): {errors[0] if errors else 'see the output'}; last "
                           f"output:\n{tail}")
    return [json.loads((job.parent / f"history-seed-{index}-rank-0.json").read_text())
            for index in range(len(spec["seeds"]))]


def _worker(job_path: Path) -> None:
    """One DDP process: join the group, train every seed on this rank's share, save on rank 0."""
    # deferred: torch, and these modules that import it; the launcher side of this module loads
    # with the code location
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from synthfactory.ops.tensors import use_deterministic_algorithms
    from synthfactory.ops.training.sources import ShardSource
    from synthfactory.ops.training.train import (ClassifierSettings, save_classifier,
                                                 train_classifier)

    job = json.loads(job_path.read_text())
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    # Each process picks its own kernels: the step's runtime.deterministic does not reach here.
    use_deterministic_algorithms(job["deterministic"])
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    masks: dict[str, np.ndarray] = {}
    if (job_path.parent / MASKS).is_file():
        from safetensors.numpy import load_file

        masks = load_file(str(job_path.parent / MASKS))
    shards = [ShardRef(Path(s["path"]), s["count"], masks.get(str(index)))
              for index, s in enumerate(job["shards"])]
    out_dir = Path(job["out_dir"])

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        if cuda:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[local_rank])
        return DistributedDataParallel(model)

    def log(message: str) -> None:
        if rank == 0:
            print(f"[rank0] {message}", flush=True)

    for index, (seed, stream_seed) in enumerate(zip(job["seeds"], job["stream_seeds"],
                                                    strict=True)):
        source = ShardSource(shards, image_shape=tuple(job["image_shape"]), soft=job["soft"],
                             n_targets=job["n_targets"], seed=stream_seed, rank=rank,
                             world_size=world, workers=job["workers"],
                             shuffle_buffer=job["shuffle_buffer"])
        recipe = dict(job["recipe"])
        plan = PrecisionPlan(autocast=recipe.pop("autocast"),
                             channels_last=recipe.pop("channels_last"))
        settings = ClassifierSettings(**recipe, precision=plan)
        model, history = train_classifier(source, None, job["n_classes"], settings, seed=seed,
                                          device=device, log=log, wrap=wrap)
        # Every rank ends with the same weights; the digest shows it.
        digest = float(sum(p.double().sum() for p in model.state_dict().values()))
        history.update({"rank": rank, "world_size": world, "parameter_sum": digest})
        if rank == 0:
            save_classifier(out_dir / f"seed-{index}.safetensors", model)
        (job_path.parent / f"history-seed-{index}-rank-{rank}.json").write_text(
            dumps_json(history))
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
