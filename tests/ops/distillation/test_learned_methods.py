"""Gradient and trajectory matching, experts, the evaluation protocol, storage and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from synthfactory.ops.data.digits import load_digits
from synthfactory.ops.distillation.cells import (Cell, cells, expert_keys, parse_cell,
                                                 parse_expert)
from synthfactory.ops.distillation.cellstore import (cell_is_current, load_trajectory, read_cell,
                                                     save_trajectory, write_cell)
from synthfactory.ops.distillation.export import export_distilled
from synthfactory.ops.distillation.matching import DcSettings, gradient_matching, layer_distance
from synthfactory.ops.distillation.protocol import accuracy, train_network
from synthfactory.ops.distillation.recipes import DistilledRepeat
from synthfactory.ops.distillation.trajectories import (MttSettings, train_expert,
                                                        trajectory_matching)
from synthfactory.ops.tensors import to_model_space
from synthfactory.ops.training.architectures import build_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits(8, 1)
    keep = data.labels < 3
    return data.images[keep][:90], data.labels[keep][:90]


@pytest.fixture(scope="module")
def experts(digits: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    images, labels = digits
    return [train_expert(images, labels, 3, seed=s, device=CPU, epochs=4, width=16,
                         batch_size=40, dsa=None)[0] for s in range(2)]


def test_layer_distance_is_zero_for_aligned_gradients_and_ignores_vectors() -> None:
    weight = torch.randn(4, 3, 3, 3)
    assert float(layer_distance(weight, 2 * weight)) == pytest.approx(0.0, abs=1e-5)
    assert float(layer_distance(weight, -weight)) == pytest.approx(8.0, abs=1e-4)  # 4 rows × 2
    assert float(layer_distance(torch.ones(5), -torch.ones(5))) == 0.0  # biases, as the reference


def test_dc_lowers_the_gradient_distance_and_is_deterministic(
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    runs = [gradient_matching(images, labels, 3, 1,
                              DcSettings(iterations=n, batch_real=24, width=16,
                                         learning_rate=0.5, dsa=None), seed=0, device=CPU)
            for n in (8, 2, 2)]
    np.testing.assert_array_equal(runs[1].images, runs[2].images)
    assert runs[0].images.dtype == np.float32 and runs[0].labels.tolist() == [0, 1, 2]

    def yardstick(learned: torch.Tensor) -> float:
        """Gradient distance to all real images of the class, on 4 fixed random nets."""
        total = 0.0
        for seed in range(4):
            torch.manual_seed(100 + seed)
            net = build_model("convnet", channels=1, n_classes=3, resolution=8, width=16)
            params = list(net.parameters())
            for c in range(3):
                real = to_model_space(images[labels == c])
                g_real = torch.autograd.grad(F.cross_entropy(net(real), torch.full(
                    (len(real),), c)), params)
                g_learned = torch.autograd.grad(F.cross_entropy(net(learned[c:c + 1]),
                                                                torch.tensor([c])), params)
                total += float(sum(layer_distance(a, b) for a, b in zip(g_real, g_learned, strict=True)))
        return total

    start = to_model_space(images[runs[0].history["init"]])
    assert yardstick(torch.from_numpy(runs[0].images)) < yardstick(start)


def test_experts_keep_every_epoch(experts: list[np.ndarray]) -> None:
    assert experts[0].shape[0] == 5 and experts[0].dtype == np.float32  # epochs 0..4
    assert not np.array_equal(experts[0][0], experts[0][-1])
    assert not np.array_equal(experts[0][0], experts[1][0])  # seeded apart


def test_mtt_moves_the_student_towards_the_expert(digits: tuple[np.ndarray, np.ndarray],
                                                  experts: list[np.ndarray]) -> None:
    images, labels = digits
    settings = MttSettings(iterations=10, syn_steps=4, expert_epochs=1, max_start_epoch=2,
                           width=16, learning_rate=50.0)
    result = trajectory_matching(images, labels, 3, 2, experts, settings, seed=0, device=CPU)
    loss = result.history["loss"]
    assert np.mean(loss[-4:]) < np.mean(loss[:4])
    assert result.soft_labels is None and result.learned_lr is not None


def test_datm_learns_soft_labels_and_moves_its_start_range(
        digits: tuple[np.ndarray, np.ndarray], experts: list[np.ndarray]) -> None:
    images, labels = digits
    settings = MttSettings(iterations=8, syn_steps=3, expert_epochs=1, max_start_epoch=1,
                           final_max_start_epoch=3, soft_labels=True, width=16)
    result = trajectory_matching(images, labels, 3, 1, experts, settings, seed=0, device=CPU)
    assert result.soft_labels.shape == (3, 3)
    np.testing.assert_allclose(result.soft_labels.sum(1), 1.0, atol=1e-5)
    starts = result.history["start_epochs"]
    assert max(starts[:2]) == 0 and max(starts) > 0  # the range [0, 1) grows to [0, 3)


def test_trajectory_matching_names_experts_that_are_too_short(
        digits: tuple[np.ndarray, np.ndarray], experts: list[np.ndarray]) -> None:
    images, labels = digits
    with pytest.raises(ValueError, match="exceeds the experts' 4 epochs"):
        trajectory_matching(images, labels, 3, 1, experts,
                            MttSettings(iterations=1, expert_epochs=2, max_start_epoch=3,
                                        width=16), seed=0, device=CPU)


def test_evaluation_networks_learn_from_float_images_and_soft_labels(
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    learned = to_model_space(images[:30]).numpy() * 1.5  # outside [-1, 1], as learned sets are
    soft = np.eye(3, dtype=np.float32)[labels[:30]] * 0.9 + 0.1 / 3
    net, history = train_network(learned, soft, 3, seed=0, device=CPU, epochs=30, width=16)
    assert history["steps"] == 30
    assert accuracy(net, to_model_space(images[30:]) * 1.5, labels[30:]) > 0.6


def test_cells_round_trip_float32_and_are_reused_only_from_the_same_inputs(
        tmp_path: Path) -> None:
    cell = parse_cell("dm-ipc2-real")
    assert cell == Cell("dm", 2, "real") and cell.learned
    with pytest.raises(ValueError, match="<method>-ipc<N>-<source>"):
        parse_cell("dm-10-real")
    assert [c.key for c in cells(["dm", "dc"], [1], ["real"])] == ["dm-ipc1-real", "dc-ipc1-real"]
    images = np.random.default_rng(0).normal(0, 1.5, (4, 1, 8, 8)).astype(np.float32)
    repeat = DistilledRepeat(images, np.array([0, 0, 1, 1]), np.full((4, 2), 0.5, np.float32),
                             learned_lr=0.02, origins=["dm"] * 4)
    old = tmp_path / "old"
    record = write_cell(old / "cells" / cell.key, cell, [repeat], {"inputs_digest": "abc"})
    assert record["repeats"][0]["pixels_outside_fraction"] > 0
    back = read_cell(old / "cells" / cell.key)[0]
    np.testing.assert_array_equal(back.images, images)  # float32, not rounded to uint8
    assert back.learned_lr == pytest.approx(0.02) and back.soft_labels.shape == (4, 2)
    assert not cell_is_current(old / "cells" / cell.key, "other digest")
    assert cell_is_current(old / "cells" / cell.key, "abc")
    (old / "cells" / cell.key / "cell.json").unlink()  # unfinished: never kept
    assert not cell_is_current(old / "cells" / cell.key, "abc")
    save_trajectory(tmp_path / "e.safetensors", np.ones((3, 5), np.float32), {"epochs": 2})
    trajectory, meta = load_trajectory(tmp_path / "e.safetensors")
    assert trajectory.shape == (3, 5) and meta == {"epochs": 2}


def test_expert_keys_follow_the_trajectory_cells_and_parse_back() -> None:
    """Experts exist only for sources that an mtt/datm cell distils; keys are unambiguous."""
    table = cells(["dm", "mtt"], [1], ["real", "filtered"]) + cells(["datm"], [1], ["synthetic"])
    assert expert_keys(table, 2) == ["real-expert-0", "real-expert-1", "filtered-expert-0",
                                     "filtered-expert-1", "synthetic-expert-0",
                                     "synthetic-expert-1"]
    assert expert_keys(cells(["dm", "herding"], [1, 10], ["real"]), 5) == []
    assert parse_expert("real-expert-10") == ("real", 10)
    for bad in ("real-expert-01", "dm-ipc1-real", "moon-expert-0", "real-expert-"):
        with pytest.raises(ValueError, match="<source>-expert-<k>"):
            parse_expert(bad)


def test_export_imagefolder_and_npz(tmp_path: Path) -> None:
    images = np.linspace(-1.5, 1.5, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    soft = np.array([[0.8, 0.2], [0.1, 0.9]], np.float32)
    summary = export_distilled(images, np.array([0, 1]), ["zero", "a/b"], tmp_path / "f",
                               "imagefolder", soft_labels=soft)
    labels = json.loads((tmp_path / "f" / "labels.json").read_text())
    assert [entry["class"] for entry in labels] == ["zero", "a/b"]  # names are data, not paths
    assert labels[1]["soft_label"] == [pytest.approx(0.1), pytest.approx(0.9)]
    assert (tmp_path / "f" / "001" / "00001.png").is_file()
    assert summary["pixels_clipped_fraction"] > 0
    export_distilled(images, np.array([0, 1]), ["zero", "a/b"], tmp_path / "n", "npz")
    with np.load(tmp_path / "n" / "distilled.npz") as data:
        assert data["images"].dtype == np.uint8 and data["images"].shape == (2, 8, 8, 1)
        assert data["images"].min() == 0 and data["images"].max() == 255
    with pytest.raises(ValueError, match="'zip' is not one of imagefolder, npz"):
        export_distilled(images, np.array([0, 1]), ["a", "b"], tmp_path / "z", "zip")
