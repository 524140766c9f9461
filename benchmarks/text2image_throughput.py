"""Throughput of `synthetic_shards` on a Stable Diffusion pipeline against a bare `pipe(...)` call.

The pipeline is built from config with random weights (no download): `--size sd15` is Stable
Diffusion 1.5's full architecture (UNet, VAE, text encoder: ~1.07 B parameters), `--size tiny`
a small one for CPUs. Both sides render the same prompt records with the same batch size,
steps, guidance and per-image seeded generators, `output_type="np"`. The asset side is a real
in-process materialization of every shard partition (PNG encoding, tar writing, sha256,
sidecars, fitting to the real images' resolution); the bare side calls the pipeline in a loop
and keeps the arrays. Both are timed from the first generation call to the last image (model
loading excluded on both sides; the asset's per-shard timings give its figure) and interleaved
over `--repeats`; the best of each is the headline, the medians are printed too.

    python benchmarks/text2image_throughput.py --size sd15 --device cuda --dtype float16 \\
        --height 512 --width 512 --steps 25 --batch 16 --images 128      # the GPU goal
    python benchmarks/text2image_throughput.py --size tiny --height 64 --width 64  # a CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoPipelineForText2Image
from PIL import Image

from shard_runs import ShardRuns
from synthfactory.ops.generation.random_models import build_sd_pipeline
from synthfactory.params import parse_params

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_real_folder(root: Path, resolution: int) -> Path:
    """A small CIFAR-like image folder (two noise images per class): the real images' shape."""
    generator = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for index in range(2):
            pixels = generator.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def main() -> None:
    """Build the model, materialize the upstream once, then time asset and bare loop alternately."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=64, help="images per run (a multiple of 10)")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--resolution", type=int, default=32, help="the real images' resolution")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sf-t2i-bench-"))
    started = time.perf_counter()
    model_dir = build_sd_pipeline(workdir / "model", size=args.size)
    build_seconds = time.perf_counter() - started
    raw = {
        "store": {"root": str(workdir / "data")},
        "runtime": {"device": args.device, "dtype": args.dtype},
        "real_images": {"source": "imagefolder", "class_names": CLASSES,
                        "root": str(write_real_folder(workdir / "real", args.resolution)),
                        "resolution": args.resolution, "channels": 3},
        "prompts": {"images_per_class": max(1, args.images // len(CLASSES)),
                    "templates": ["a photo of a {name}"], "guidance": [args.guidance],
                    "negative_prompt": "blurry, low quality"},
        "generator": {"backend": "diffusers", "model": str(model_dir), "local_files_only": True},
        "synthetic_shards": {"shard_size": args.shard_size, "steps": args.steps,
                             "scheduler": "default", "batch_size": args.batch,
                             "height": args.height, "width": args.width},
    }
    config = parse_params(raw)
    runs = ShardRuns(config)
    records = runs.records()
    runtime = config.runtime

    def bare_loop() -> tuple[float, float]:
        """(generation seconds, seconds including the pipeline load)."""
        loaded = time.perf_counter()
        pipe = AutoPipelineForText2Image.from_pretrained(
            model_dir, dtype=runtime.torch_dtype, use_safetensors=True,
            local_files_only=True).to(runtime.torch_device)
        pipe.set_progress_bar_config(disable=True)
        started = time.perf_counter()
        for shard_start in range(0, len(records), args.shard_size):
            shard = records[shard_start:shard_start + args.shard_size]
            for start in range(0, len(shard), args.batch):
                batch = shard[start:start + args.batch]
                pipe(prompt=[r.text for r in batch], negative_prompt=[r.negative_text for r in batch],
                     num_inference_steps=args.steps, guidance_scale=args.guidance,
                     height=args.height, width=args.width, output_type="np",
                     generator=[torch.Generator("cpu").manual_seed(r.seed) for r in batch])
        ended = time.perf_counter()
        del pipe
        return ended - started, ended - loaded

    def asset_run() -> tuple[float, float]:
        """(generation seconds summed over shards, seconds of the whole materialization)."""
        result, whole = runs.materialize_shards()
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        return sum(shard["seconds"] for shard in metadata["shards"].value), whole

    bare, asset = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop())
        asset.append(asset_run())
        if runtime.torch_device.type == "cuda":
            torch.cuda.empty_cache()
    n_images = len(records)
    bare_ips = n_images / min(s for s, _ in bare)
    asset_ips = n_images / min(s for s, _ in asset)
    print(json.dumps({
        "benchmark": "text2image_throughput",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, device "
                   f"{torch.cuda.get_device_name() if runtime.torch_device.type == 'cuda' else 'cpu'}",
        "model": f"{args.size} (random weights from config)", "build_seconds": round(build_seconds, 1),
        "dtype": args.dtype, "height": args.height, "width": args.width, "steps": args.steps,
        "batch_size": args.batch, "guidance": args.guidance, "images": n_images,
        "shards": len(runs.shard_keys), "stored_resolution": args.resolution,
        "bare_seconds": [round(s, 2) for s, _ in bare],
        "asset_seconds": [round(s, 2) for s, _ in asset],
        "bare_seconds_with_load": [round(s, 2) for _, s in bare],
        "asset_seconds_whole_run": [round(s, 2) for _, s in asset],
        "bare_images_per_second": round(bare_ips, 2),
        "asset_images_per_second": round(asset_ips, 2),
        "asset_over_bare": round(asset_ips / bare_ips, 3),
        "asset_over_bare_median": round(statistics.median(s for s, _ in bare)
                                        / statistics.median(s for s, _ in asset), 3),
        "goal": "asset_over_bare >= 0.95",
    }, indent=2))


if __name__ == "__main__":
    main()
