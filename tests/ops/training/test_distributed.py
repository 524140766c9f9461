"""DDP: two CPU processes (gloo, launched by torchrun) train classifiers as good as one process.

The real digits are written as shards; three seeds train with DDP on 2 processes (each streams
its own half of the shards, gradients averaged) and three train in one process on the same
images in memory (the default path). Their mean accuracies on held-out digits must agree within
the spread of the seeds, and both ranks must end with the same weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.evaluation.metrics import mean_std
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.shards import Sample, write_shard
from synthfactory.ops.training.distributed import Recipe, train_distributed, write_job
from synthfactory.ops.training.shardrefs import shard_refs
from synthfactory.ops.training.shardsets import ShardSet
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import ClassifierSettings, load_classifier, train_classifier

CPU = torch.device("cpu")
RECIPE = Recipe(epochs=8, min_steps=10, batch_size=64, learning_rate=0.02, width=16)
SEEDS = [derive_seed(0, "classifiers", index) for index in range(3)]
N_TRAIN = 1200


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """1200 real digits as 8 shards, and the other 597 as the test set."""
    data = load_digits(8, 1)
    root = tmp_path_factory.mktemp("ddp")
    paths = []
    for number, start in enumerate(range(0, N_TRAIN, 150)):
        path = root / "shards" / f"train-{number:05d}.tar"
        write_shard(path, (Sample(f"d{i:05d}", data.images[i], int(data.labels[i]))
                           for i in range(start, start + 150)))
        paths.append(path)
    return {"root": root, "set": ShardSet(shard_refs(paths), (8, 8, 1)),
            "train": (data.images[:N_TRAIN], data.labels[:N_TRAIN]),
            "test": (data.images[N_TRAIN:], data.labels[N_TRAIN:])}


def _accuracy(model: torch.nn.Module, test: tuple[np.ndarray, np.ndarray]) -> float:
    return float(np.mean(predict_proba(model, test[0], device=CPU).argmax(1) == test[1]))


def test_ddp_on_two_cpu_processes_matches_one_process_within_noise(digits: dict) -> None:
    work, out = digits["root"] / "job", digits["root"] / "out"
    out.mkdir()
    job = write_job(work, digits["set"], n_classes=10, seeds=SEEDS,
                    stream_seeds=[derive_seed(seed, "stream") for seed in SEEDS], recipe=RECIPE,
                    workers=1, shuffle_buffer=300, out_dir=out, threads=1)
    histories = train_distributed(job, devices=2, timeout=600)
    ddp = [_accuracy(load_classifier(out / f"seed-{i}.safetensors", CPU), digits["test"])
           for i in range(3)]
    torch.set_num_threads(1)
    single = []
    for seed in SEEDS:
        settings = ClassifierSettings(epochs=RECIPE.epochs, min_steps=RECIPE.min_steps,
                                      batch_size=RECIPE.batch_size,
                                      learning_rate=RECIPE.learning_rate, width=RECIPE.width)
        model, _ = train_classifier(*digits["train"], 10, settings, seed=seed, device=CPU)
        single.append(_accuracy(model, digits["test"]))
    (ddp_mean, ddp_std), (single_mean, single_std) = mean_std(ddp), mean_std(single)
    # Within noise: the means differ by less than 3 standard errors of their difference (with
    # a floor of one point, for seeds that happen to agree closely).
    noise = max(3 * math.sqrt(ddp_std**2 / 3 + single_std**2 / 3), 0.01)
    print(f"DDP (2 processes) {ddp} mean {ddp_mean:.4f} ± {ddp_std:.4f}; one process {single} "
          f"mean {single_mean:.4f} ± {single_std:.4f}; allowed difference {noise:.4f}")
    assert min(single) > 0.85  # both learn the problem (a broken run is not "within noise")
    assert abs(ddp_mean - single_mean) <= noise
    # Same global batch and steps as one process, each rank on its own share.
    steps = max(RECIPE.min_steps, RECIPE.epochs * math.ceil(N_TRAIN / RECIPE.batch_size))
    assert [h["steps"] for h in histories] == [steps] * 3
    assert all(h["world_size"] == 2 for h in histories)
    # Gradients were averaged: both ranks end with the same weights.
    for index in range(3):
        ranks = [json.loads((work / f"history-seed-{index}-rank-{rank}.json").read_text())
                 for rank in range(2)]
        assert ranks[0]["parameter_sum"] == ranks[1]["parameter_sum"]


def test_a_batch_that_does_not_split_over_the_devices_fails_before_launching(
        digits: dict, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job", digits["set"], n_classes=10, seeds=SEEDS[:1],
                    stream_seeds=[0], recipe=Recipe(batch_size=63), workers=0, shuffle_buffer=0,
                    out_dir=tmp_path, threads=1)
    with pytest.raises(ValueError, match="batch_size 63 must be a multiple of runtime.devices 2"):
        train_distributed(job, devices=2)


@pytest.mark.e2e
def test_a_failing_process_fails_the_launch_with_its_error(digits: dict, tmp_path: Path) -> None:
    """A rank that raises stops the group; the error names the rank's exception."""
    job = write_job(tmp_path / "job", digits["set"], n_classes=10, seeds=SEEDS[:1],
                    stream_seeds=[0], recipe=Recipe(min_steps=2, width=8, architecture="nope"),
                    workers=0, shuffle_buffer=0, out_dir=tmp_path, threads=1)
    with pytest.raises(RuntimeError, match=r"\[rank\d\]: ValueError: .*nope"):
        train_distributed(job, devices=2, timeout=600)
