"""Throughput of the generator adapter's LoRA fine-tune (steps/s, images/s) on a Stable Diffusion
pipeline built from config with random weights (no download).

`--size sd15` is Stable Diffusion 1.5's full architecture (~1.07 B parameters), `--size tiny` a
small one for CPUs. The timed part is the training loop of `train_lora` exactly as the
`generator_adapter` asset runs it (VAE-encoded images, UNet forward and backward through the
LoRA layers, AdamW), after `--warmup` steps; the one-off model load, VAE encoding and held-out
loss are excluded and printed separately.

    python benchmarks/adapter_throughput.py --size sd15 --device cuda --dtype bfloat16 \\
        --resolution 512 --batch 4 --steps 50          # the GPU figure (make bench-gpu)
    python benchmarks/adapter_throughput.py --size tiny --resolution 32 --batch 4  # a CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthfactory.ops.generation.adapter import LoraSettings, StableDiffusionParts, train_lora
from synthfactory.ops.generation.random_models import build_sd_pipeline

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main() -> None:
    """Build the model, fine-tune `--warmup + --steps` steps, time the last `--steps`."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--text-encoder", action="store_true")
    parser.add_argument("--images", type=int, default=16, help="real images to fine-tune on")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        path = build_sd_pipeline(Path(work) / "sd", size=args.size)
        built = time.perf_counter() - started
        started = time.perf_counter()
        parts = StableDiffusionParts(path, device, DTYPES[args.dtype])
        loaded = time.perf_counter() - started
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(args.images) % 2
        stamps: dict[int, float] = {}

        def log(message: str) -> None:
            if message.startswith("generator_adapter step "):
                stamps[int(message.split()[2].split("/")[0])] = time.perf_counter()

        total = args.warmup + args.steps
        settings = LoraSettings(rank=args.rank, steps=total, batch_size=args.batch,
                                text_encoder=args.text_encoder, resolution=args.resolution,
                                checkpoint_every=0)
        started = time.perf_counter()
        result = train_lora(parts, images, labels, [["a photo of a cat"], ["a photo of a dog"]],
                            settings, seed=0, base_digest="benchmark", log=log, log_every=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timed = stamps[total] - stamps[args.warmup]
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    print(json.dumps({
        "benchmark": "adapter_throughput", "size": args.size, "device": args.device,
        "dtype": args.dtype, "resolution": args.resolution, "batch": args.batch,
        "rank": args.rank, "text_encoder": args.text_encoder,
        "trainable_parameters": result.trainable_parameters,
        "timed_steps": args.steps, "seconds": round(timed, 3),
        "steps_per_second": round(args.steps / timed, 4),
        "images_per_second": round(args.steps * args.batch / timed, 3),
        "build_seconds": round(built, 1), "load_seconds": round(loaded, 1),
        "train_call_seconds": round(time.perf_counter() - started, 1),
        "peak_gpu_gib": None if peak is None else round(peak, 2),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine()}, indent=2))


if __name__ == "__main__":
    main()
