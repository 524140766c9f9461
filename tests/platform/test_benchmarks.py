"""The benchmarks measure what their names say, and the GPU smoke benchmark runs (on CPU here).

A figure of the manual (docs/results.md) is only as good as the script that prints it: these
tests pin the parts that were wrong once (the "initial" matching loss measured on other images
than dm starts from, a peak memory that counted the loading before dm) and keep `make
bench-gpu`'s script working on machines without a GPU.
"""

from __future__ import annotations

import json
import shutil
import mmap
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support import PROJECT_ROOT, tiny_params

BENCHMARKS = PROJECT_ROOT / "benchmarks"


@pytest.fixture
def benchmarks_on_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_peak_memory_counts_only_what_runs_after_the_reset(benchmarks_on_path: None) -> None:
    from memory import peak_rss_mib, reset_peak_rss

    def touched(mib: int) -> mmap.mmap:
        """Fresh anonymous pages, all touched: the allocator cannot hand back resident memory
        freed by an earlier test of this process (which would not raise the RSS at all)."""
        pages = mmap.mmap(-1, mib * 2**20)
        np.frombuffer(pages, dtype=np.uint8)[:] = 1
        return pages

    touched(300).close()  # 300 MiB touched and freed before the measured code
    baseline = reset_peak_rss()
    during = touched(60)  # 60 MiB in the measured code
    peak = peak_rss_mib() - baseline
    during.close()
    # ru_maxrss - baseline would say ≥ 300 MiB here.
    assert 55 <= peak < 200, peak


def test_distillation_benchmark_starts_its_initial_loss_where_dm_starts(
        tmp_path: Path, benchmarks_on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a learning rate of ~0, dm returns the images it started from: the benchmark's loss
    of the start images must then equal that of the learned ones. (It once measured the first
    images of each class instead of dm's seeded random start: 99.5 against 88.4 at ipc 1.)
    The benchmark runs on 20 digits per class here (the property does not depend on the size;
    the whole train split made this the slowest test of its file)."""
    import distillation

    images, labels = distillation.digits_train()
    subset = np.concatenate([np.flatnonzero(labels == label)[:20] for label in range(10)])
    monkeypatch.setattr(distillation, "digits_train", lambda: (images[subset], labels[subset]))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(tmp_path, distilled_set={
        "dm": {"iterations": 3, "learning_rate": 1e-12, "batch_real": 16}})))
    result = distillation.run_one(str(params), "dm", 1, None, "cpu")
    assert result["iterations"] == 3  # as run: the length of its loss history
    losses = result["matching_loss_fixed_nets"]
    assert losses["start_images"] == losses["learned"]
    # Not > 0: in a process that ran other tests the allocator can reuse resident pages, and the
    # resident set can shrink by a page or two while it is measured (-0.2 MiB seen on a loaded
    # machine); the benchmark itself measures in a fresh process per cell.
    assert result["peak_memory_increase_mib"] > -1.0


def test_gpu_smoke_benchmark_runs_on_cpu(tmp_path: Path, benchmarks_on_path: None,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`make bench-gpu`'s script runs end to end against the current API (here on CPU).

    Run as `__main__` in this process rather than in a subprocess: the same script and argv,
    without importing torch and diffusers again (that was half of this test's time)."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(tmp_path, prompts={"images_per_class": 3},
                                                 judge={"epochs": 1, "width": 8})))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        str(BENCHMARKS / "gpu_smoke.py"), "--params", str(params), "--device", "cpu",
        "--train-steps", "2", "--dm-iterations", "2", "--ipc", "1", "2"])
    runpy.run_path(str(BENCHMARKS / "gpu_smoke.py"), run_name="__main__")
    report = json.loads(capsys.readouterr().out)
    assert report["ddpm_training"]["steps"] == 2
    assert report["sampling"]["float32"]["images"] == 30
    assert "judge_agreement" in report["sampling"]["float32"]
    assert report["classifier"]["steps"] == 10  # tiny min_steps
    # Trained as the classifier assets train (training_settings): the CPU plan is fp32.
    assert report["classifier"]["precision"] == "fp32, contiguous"
    assert [row["ipc"] for row in report["dm"]] == [1, 2]
    assert all(row["iterations"] == 2 for row in report["dm"])
    assert report["date"] and "CPU" in report["machine"]


def test_rank_correlation_is_exact_for_few_settings_and_says_when_it_cannot(
        benchmarks_on_path: None) -> None:
    """Five settings in the same order: ρ = 1 with the exact two-sided p of 2/120 (the two
    orderings as extreme among 5! permutations); reversed: ρ = −1; a constant side: no ρ."""
    from what_predicts_value import rank_correlation

    x = np.array([0.1, 0.4, 0.2, 0.9, 0.5])
    assert rank_correlation(x, x * 3) == {"rho": 1.0, "p": round(2 / 120, 4), "n": 5}
    assert rank_correlation(x, -x)["rho"] == -1.0
    assert rank_correlation(x, np.ones(5))["rho"] is None
    # Many cells: the permutation p of unrelated values is not small.
    generator = np.random.default_rng(0)
    unrelated = rank_correlation(generator.normal(size=50), generator.normal(size=50))
    assert unrelated["n"] == 50 and unrelated["p"] > 0.05


def test_fan_out_summary_keeps_every_repeat_and_gives_the_median_and_range(
        benchmarks_on_path: None) -> None:
    """A shared machine moves one ratio by ±0.1: the fan-out benchmark reports the median and
    the range of the repeats, and keeps each repeat's timings beside them."""
    from fan_out import ratios, summary

    timings = [ratios((97.0, 87.0), (two, step)) for two, step in
               ((65.9, 52.7), (60.9, 49.1), (58.0, 47.0))]
    result = summary(timings)
    assert result["repeats"] == timings
    assert result["speedup"] == {"median": 1.59, "min": 1.47, "max": 1.67}
    assert result["step_speedup"] == {"median": 1.77, "min": 1.65, "max": 1.85}


def test_beyond_digits_renders_folders_the_imagefolder_source_reads(
        tmp_path: Path, benchmarks_on_path: None) -> None:
    """Each rendered folder holds every digit once, one sub-folder per class, at its size and
    channels; the params it runs change only real_images, the store and the report's directory,
    and they parse; the imagefolder source reads the folder back at that size."""
    from beyond_digits import FOLDERS, folder_params, write_folder

    from synthfactory.ops.data.imagefolder import load_imagefolder
    from synthfactory.params import parse_params

    shipped = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    folder = FOLDERS["colour16-textured"]
    assert write_folder(folder, tmp_path / "images") == 1797
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [str(k) for k in range(10)]
    params = folder_params(shipped, folder, tmp_path / "images", tmp_path, threads=1)
    changed = {key for key in shipped if params[key] != shipped[key]}
    assert changed == {"real_images", "store", "eval_report", "runtime"}
    assert parse_params(params).params.real_images.resolution == 16
    dataset = load_imagefolder(str(tmp_path / "images"), 16, 3)
    images = dataset.images
    assert images.shape == (1797, 16, 16, 3) and not dataset.skipped
    # Coloured: the three channels differ (not a grey image stored as RGB).
    assert np.abs(images[..., 0].astype(int) - images[..., 1]).mean() > 5


def test_beyond_digits_criteria_fail_on_their_bad_cases(benchmarks_on_path: None) -> None:
    """The three criteria read the numbers they name: a synthetic arm 10 points under real
    fails unless a warning names why; a seed spread above the bound fails without its warning;
    a real arm below 0.95 of its control fails."""
    from beyond_digits import criteria

    def arm(mean: float, std: float = 0.001) -> dict:
        return {"accuracy_mean": mean, "accuracy_std": std}

    metrics = {"arms": {"real": arm(0.97), "synthetic": arm(0.87, std=0.05)}, "warnings": []}
    control = {"val_accuracy": 0.98, "arm_val_accuracy": 0.90, "steps": 480}
    bad = criteria(metrics, control, spread_bound=0.02)
    assert bad["real_vs_control"]["holds"] is False and bad["real_vs_control"]["ratio"] < 0.95
    assert bad["synthetic_within_5_points"] == {"difference_points": -10.0, "holds": False,
                                                "warned": False}
    assert bad["seed_spread_warned"]["without_warning"] == ["synthetic"]
    metrics["warnings"] = [{"kind": "class_pass_rate", "subject": "3"},
                           {"kind": "seed_spread", "subject": "synthetic"}]
    warned = criteria(metrics, {**control, "arm_val_accuracy": 0.97}, spread_bound=0.02)
    assert all(warned[name]["holds"] for name in
               ("real_vs_control", "synthetic_within_5_points", "seed_spread_warned"))


def test_filter_sweep_pairs_every_setting_with_the_params_one(benchmarks_on_path: None) -> None:
    """The row equal to the params' filter is the reference; a setting right on 12 more of 40
    images for both seeds is `better` by 0.3, the reference row gets no comparison."""
    from filter_sweep import compare_with_params_setting

    from synthfactory.ops.evaluation.comparisons import ArmCorrectness

    labels = np.zeros(40, dtype=np.int64)
    shipped = np.array([[0] * 24 + [1] * 16] * 2)  # 24 of 40 right, both seeds
    better = np.array([[0] * 36 + [1] * 4] * 2)    # 36 of 40
    rows = [{"is_params_setting": False}, {"is_params_setting": True}]
    correct = [ArmCorrectness.from_predictions("better", better, labels),
               ArmCorrectness.from_predictions("shipped", shipped, labels)]
    compare_with_params_setting(rows, correct)
    assert "vs_params" not in rows[1]
    assert rows[0]["vs_params"]["difference"] == pytest.approx(0.3)
    assert rows[0]["vs_params"]["verdict"] == "better"
    unmatched = [{"is_params_setting": False}]
    compare_with_params_setting(unmatched, correct[:1])
    assert unmatched == [{"is_params_setting": False}]


def test_classifier_rate_trains_on_train_and_scores_validation(tmp_path: Path,
                                                               benchmarks_on_path: None) -> None:
    """A rate row trains on the store's train split (24 of 40 images) and scores its validation
    split (8), saying the steps and image shape it ran; a separable set is learned."""
    from classifier_rate import rate_row

    from synthfactory.ops.data.images import RealDataset
    from synthfactory.ops.data.real_images import write_real_images

    generator = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 20)
    images = np.zeros((40, 8, 8, 1), np.uint8)
    images[labels == 1, :, 4:] = 255  # class 1: right half lit; class 0: dark
    images = np.clip(images + generator.integers(0, 30, images.shape), 0, 255).astype(np.uint8)
    dataset = RealDataset(images, labels, ["dark", "right"], ["x"] * 40)
    order = generator.permutation(40)
    write_real_images(tmp_path, dataset, {"train": order[:24], "val": order[24:32],
                                          "test": order[32:]}, shard_size=100, info={})
    row, correct = rate_row(tmp_path, rate=0.05, width=16, steps=30, seeds=2)
    assert row["n_train"] == 24 and row["n_val"] == 8 and row["steps"] == 30
    assert row["image_shape"] == [8, 8, 1] and len(row["val_accuracy"]) == 2
    assert row["width"] == 16 and row["trained_on"] == "real train split"
    assert row["val_mean"] == 1.0  # a separable two-class set: the recipe learns it
    assert correct.shape == (1, 2, 8) and correct.accuracy == 1.0  # seeds × validation images
    # --train-shards: the same split's shards copied elsewhere train the same classifiers
    shards = tmp_path / "train-shards"
    shards.mkdir()
    for path in tmp_path.glob("train-0*"):
        shutil.copy(path, shards / path.name)
    from_shards, _ = rate_row(tmp_path, rate=0.05, width=16, steps=30, seeds=2,
                              train_shards=shards)
    assert from_shards["trained_on"] == str(shards) and from_shards["n_train"] == 24
    assert from_shards["val_accuracy"] == row["val_accuracy"]


def test_recipe_at_scale_keeps_every_digit_on_one_side(tmp_path: Path,
                                                       benchmarks_on_path: None) -> None:
    """The larger folders draw only training originals, the test folder only test originals
    (no digit on both sides, every class on both); each original is drawn `copies` times with
    fresh distortions; the params point real_images at both folders and parse."""
    from beyond_digits import FOLDERS
    from recipe_at_scale import render, size_params, split_originals
    from sklearn.datasets import load_digits

    from synthfactory.ops.data.imagefolder import load_imagefolder
    from synthfactory.params import parse_params

    train, test = split_originals()
    assert not set(train) & set(test) and len(train) + len(test) == 1797
    labels = load_digits().target
    assert set(labels[train]) == set(labels[test]) == set(range(10))
    folder = FOLDERS["grey16-elastic"]
    few = np.concatenate([train[labels[train] == k][:2] for k in range(10)])
    assert render(folder, few, 3, tmp_path / "train", seed=1) == 60
    images = load_imagefolder(str(tmp_path / "train"), 16, 1).images
    assert images.shape == (60, 16, 16, 1)
    assert len({image.tobytes() for image in images}) == 60  # three different draws of each
    shipped = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params = size_params(shipped, folder, tmp_path / "train", tmp_path / "test", tmp_path, 1)
    assert {key for key in shipped if params[key] != shipped[key]} == {"real_images", "store",
                                                                       "runtime"}
    assert parse_params(params).params.real_images.test_root == str(tmp_path / "test")


def test_recipe_at_scale_pairs_each_size_with_the_smallest(benchmarks_on_path: None) -> None:
    """A larger size right on 60 more of the same 200 test images is `better` than the
    smallest; the smallest gets no comparison of its own."""
    from recipe_at_scale import test_row, with_smallest

    from synthfactory.ops.evaluation.comparisons import ArmCorrectness

    labels = np.arange(200) % 10
    wrong = labels.copy()
    wrong[:80] = (wrong[:80] + 1) % 10  # the small folder misses 80, the large one 20
    small = ArmCorrectness.from_predictions("n1000", np.stack([wrong] * 3), labels)
    better = labels.copy()
    better[:20] = (better[:20] + 1) % 10
    large = ArmCorrectness.from_predictions("n50000", np.stack([better] * 3), labels)
    rows = [{"test": test_row(small)}, {"test": test_row(large)}]
    assert rows[0]["test"]["seeds"] == [0.6] * 3 and rows[0]["test"]["n_test"] == 200
    with_smallest(rows, [small, large])
    assert "vs_smallest" not in rows[0]["test"]
    found = rows[1]["test"]["vs_smallest"]
    assert found["verdict"] == "better" and abs(found["difference"] - 0.3) < 1e-9
