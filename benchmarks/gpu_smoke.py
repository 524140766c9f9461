"""The embedded default's stages on one accelerator, ops layer only (prints JSON).

Run by `make bench-gpu` (beside the text-to-image throughput benchmark). On the digits of
`--params` (the real_images split the asset makes): train the DDPM generator (timed), sample
the prompts' images with it in float32 and in float16 (images/s after one warm-up batch, and
the judge's agreement with the prompt classes for each), train the judge and one evaluation
classifier (timed; the `judge` and `classifiers` recipes), and run distribution matching at
each ipc on the float32 images (iterations/s and peak memory: `torch.cuda.max_memory_allocated`
over dm alone on CUDA, the peak RSS above the RSS before dm on CPU). Everything uses the params'
settings and runtime seed, and torch's deterministic mode as `runtime.deterministic` says, so
the figures are of what the assets compute. `--device cpu` (float32 only) checks the script
itself on a machine without a GPU.

    python benchmarks/gpu_smoke.py [--params params.yaml] [--device cuda] [--ipc 1 10 50]
        [--train-steps N] [--dm-iterations N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memory import peak_rss_mib, reset_peak_rss


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[Any, float]:
    """The result of `work()` and its wall time, with the device's queue drained on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started


def machine(device: torch.device) -> str:
    """The device, torch and CUDA versions, in words."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}")


def main() -> None:
    """Run every stage once and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--train-steps", type=int, default=None,
                        help="default: generator.ddpm.train_steps")
    parser.add_argument("--dm-iterations", type=int, default=None,
                        help="default: distilled_set.dm.iterations")
    args = parser.parse_args()

    from synthfactory.ops.training.classifiers import training_settings
    from synthfactory.ops.data.digits import load_digits
    from synthfactory.ops.data.prompts import expand_prompts
    from synthfactory.ops.data.splits import carve_validation, stratified_split
    from synthfactory.ops.distillation.dsa import DSA
    from synthfactory.ops.distillation.matching import DmSettings, distribution_matching
    from synthfactory.ops.generation.ddpm import DdpmGenerator, save_generator, train_ddpm
    from synthfactory.ops.generation.generator_build import resolved_ddpm_settings
    from synthfactory.ops.generation.samplers import SamplerSettings
    from synthfactory.ops.seeds import derive_seed
    from synthfactory.ops.tensors import use_deterministic_algorithms
    from synthfactory.ops.training.predict import predict_proba
    from synthfactory.ops.training.train import ClassifierSettings, train_classifier
    from synthfactory.params import load_params

    config = load_params(args.params)
    params, runtime = config.params, config.runtime
    if params.real_images.source != "digits" or params.generator.backend != "ddpm":
        raise SystemExit(f"{args.params}: the smoke benchmark runs the embedded default "
                         "(real_images.source: digits, generator.backend: ddpm)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu to check "
                         "the script itself)")
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    use_deterministic_algorithms(runtime.deterministic)
    seed = runtime.seed

    # The real splits exactly as the real_images asset makes them.
    real = params.real_images
    data = load_digits(real.resolution, real.effective_channels())
    train, _ = stratified_split(data.labels, real.test_fraction, seed)
    train, val = carve_validation(data.labels, train, real.val_fraction, seed)
    train_images, train_labels = data.images[train], data.labels[train]
    n_classes = len(data.class_names)
    report: dict[str, Any] = {"benchmark": "gpu_smoke", "date": datetime.date.today().isoformat(),
                              "machine": machine(device), "params": args.params,
                              "deterministic": runtime.deterministic,
                              "train_images": len(train)}

    # Generator training.
    ddpm = params.generator.ddpm.model_dump()
    if args.train_steps is not None:
        ddpm["train_steps"] = args.train_steps
    ddpm = resolved_ddpm_settings(ddpm, train_images.shape)  # the ceiling that follows the data
    (unet, scheduler, log), seconds = timed(device, lambda: train_ddpm(
        train_images, train_labels, n_classes, **ddpm, seed=seed, device=device,
        val_images=data.images[val], val_labels=data.labels[val]))
    report["ddpm_training"] = {"steps": log.steps, "ceiling": ddpm["train_steps"],
                               "stopped_by": log.stopped_by, "seconds": round(seconds, 2),
                               "steps_per_second": round(log.steps / seconds, 1)}

    # The judge and one evaluation classifier (the judge scores the samples below).
    judge_config, classifier_config = params.judge, params.classifiers
    (judge, judge_history), seconds = timed(device, lambda: train_classifier(
        train_images, train_labels, n_classes,
        ClassifierSettings(epochs=judge_config.epochs, width=judge_config.width,
                           flip=classifier_config.flip),
        seed=derive_seed(seed, "judge"), device=device))
    val_predictions = predict_proba(judge, data.images[val], device=device).argmax(1)
    report["judge"] = {"steps": judge_history["steps"], "seconds": round(seconds, 2),
                       "val_accuracy": round(float(np.mean(val_predictions
                                                           == data.labels[val])), 4)}
    # The classifier assets' settings: the architecture's recipe and the device's precision plan.
    classifier_settings = training_settings(classifier_config, device)
    (_, history), seconds = timed(device, lambda: train_classifier(
        train_images, train_labels, n_classes, ClassifierSettings(**classifier_settings),
        seed=derive_seed(seed, "classifiers", 0), device=device))
    report["classifier"] = {"architecture": classifier_config.architecture,
                            "precision": history["precision"], "steps": history["steps"],
                            "seconds": round(seconds, 2)}

    # Sampling the prompts in each dtype, as synthetic_shards batches them.
    prompts = params.prompts
    records = expand_prompts(data.class_names, prompts.images_per_class, prompts.templates,
                             prompts.guidance, prompts.negative_prompt, seed,
                             strategy=prompts.strategy, guidance_range=prompts.guidance_range)
    shards = params.synthetic_shards
    settings = SamplerSettings(steps=shards.steps, scheduler=shards.scheduler)
    dtypes = ["float32", "float16"] if device.type == "cuda" else ["float32"]
    report["sampling"] = {}
    samples: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as directory:
        save_generator(Path(directory), unet, scheduler,
                       {"backend": "ddpm", "n_classes": n_classes, "classes": data.class_names})
        for dtype in dtypes:
            generator = DdpmGenerator(Path(directory), device, getattr(torch, dtype))
            generator.render(records[:shards.batch_size], [r.seed for r in records[:shards.batch_size]],
                             settings)  # warm-up: CUDA context, kernels

            def sample_all(generator: DdpmGenerator = generator) -> np.ndarray:
                batches = [records[i:i + shards.batch_size]
                           for i in range(0, len(records), shards.batch_size)]
                return np.concatenate([generator.render(batch, [r.seed for r in batch],
                                                        settings)[0] for batch in batches])

            images, seconds = timed(device, sample_all)
            samples[dtype] = images
            predicted = predict_proba(judge, images, device=device).argmax(1)
            labels = np.array([r.class_id for r in records])
            report["sampling"][dtype] = {
                "images": len(images), "steps": shards.steps, "seconds": round(seconds, 2),
                "images_per_second": round(len(images) / seconds, 1),
                "judge_agreement": round(float(np.mean(predicted == labels)), 4)}

    # Distribution matching on the float32 samples (as a `dm-ipc<N>-synthetic` cell), each ipc
    # timed and measured alone, with the params' dm settings and DSA.
    source, source_labels = samples["float32"], np.array([r.class_id for r in records])
    distilled = params.distilled_set
    dm = distilled.dm
    dsa = DSA(strategy=distilled.dsa.strategy, fill=distilled.dsa.fill)
    iterations = args.dm_iterations or dm.iterations
    report["dm"] = []
    for ipc in args.ipc:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            baseline = reset_peak_rss()
        learned, seconds = timed(device, lambda ipc=ipc: distribution_matching(
            source, source_labels, n_classes, ipc,
            DmSettings(iterations=iterations, learning_rate=dm.learning_rate,
                       batch_real=dm.batch_real, dsa=dsa, architecture=distilled.architecture,
                       width=distilled.eval.width),
            seed=derive_seed(seed, "distilled_set", f"dm-ipc{ipc}-synthetic", 0),
            device=device))
        dm_history = learned.history
        peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                else peak_rss_mib() - baseline)
        ran = len(dm_history["loss"])
        report["dm"].append({"ipc": ipc, "iterations": ran, "seconds": round(seconds, 2),
                             "iterations_per_second": round(ran / seconds, 1),
                             "peak_memory_mib": round(peak, 1),
                             "peak_memory_kind": ("cuda max_memory_allocated"
                                                  if device.type == "cuda"
                                                  else "RSS above the RSS before dm")})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
