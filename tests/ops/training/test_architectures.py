"""The classifier architectures: the standard parameter counts, both ResNet stems, small images,
the ConvNet's width following the resolution, and a save/load round trip that rebuilds the same
architecture from the file alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.ops.training.architectures import (ARCHITECTURES, build_model, default_width,
                                                     model_from_config, parameter_count)
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.train import (ClassifierSettings, load_classifier,
                                             save_classifier, train_classifier)

CPU = torch.device("cpu")


@pytest.mark.parametrize(("architecture", "resolution", "n_classes", "expected"), [
    # The widely used CIFAR definitions (3×3 stem, no max-pool) at 10 classes.
    ("resnet18", 32, 10, 11_173_962),
    ("resnet50", 32, 10, 23_520_842),
    ("vgg11", 32, 10, 9_231_114),
    # The ImageNet stem above 64 px: torchvision's resnet18 / resnet50 at 1000 classes.
    ("resnet18", 224, 1000, 11_689_512),
    ("resnet50", 224, 1000, 25_557_032),
    # The DD ConvNet-3 (width 128, instance norm) at 32 px and 10 classes.
    ("convnet", 32, 10, 320_010),
])
def test_parameter_counts_match_the_standard_definitions(architecture: str, resolution: int,
                                                         n_classes: int, expected: int) -> None:
    model = build_model(architecture, channels=3, n_classes=n_classes, resolution=resolution)
    assert parameter_count(model) == expected


def test_the_stem_follows_the_resolution() -> None:
    small = build_model("resnet18", channels=3, n_classes=10, resolution=64)
    large = build_model("resnet18", channels=3, n_classes=10, resolution=96)
    assert small.stem[0].kernel_size == (3, 3) and len(small.stem) == 3  # no max-pool
    assert large.stem[0].kernel_size == (7, 7) and isinstance(large.stem[-1], torch.nn.MaxPool2d)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_runs_on_8px_grey_digits(architecture: str) -> None:
    model = build_model(architecture, channels=1, n_classes=10, resolution=8, width=16).eval()
    images = torch.randn(3, 1, 8, 8)
    assert model(images).shape == (3, 10)
    assert model.embed(images).shape == (3, model.embedding_dim)


def test_instance_norm_variant_has_no_running_statistics() -> None:
    batch = build_model("resnet18", channels=3, n_classes=10, resolution=32)
    instance = build_model("resnet18", channels=3, n_classes=10, resolution=32, norm="instance")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in instance.modules())
    assert parameter_count(batch) == parameter_count(instance)  # affine weights either way


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_saved_model_is_rebuilt_with_its_architecture(architecture: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(architecture, channels=1, n_classes=4, resolution=8, width=8).eval()
    path = tmp_path / "model.safetensors"
    save_classifier(path, model)
    loaded = load_classifier(path, CPU)
    assert type(loaded) is type(model) and loaded.config == model.config
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(predict_proba(loaded, images, device=CPU),
                                  predict_proba(model, images, device=CPU))


def test_a_config_without_architecture_is_a_convnet() -> None:
    """Checkpoints written before the architectures existed hold a ConvNet's config only."""
    model = model_from_config({"channels": 1, "n_classes": 3, "resolution": 8, "width": 8,
                               "depth": 2})
    assert model.config["architecture"] == "convnet"


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'resnet19' is not one of convnet, resnet18"):
        build_model("resnet19", channels=3, n_classes=10, resolution=32)


@pytest.mark.parametrize(("resolution", "width"),
                         [(8, 64), (16, 64), (28, 128), (32, 128), (64, 128)])
def test_a_convnet_without_a_width_takes_the_resolutions_and_records_it(
        resolution: int, width: int, tmp_path: Path) -> None:
    """`width=None` (classifiers.width: null) is 64 up to 16 px and the reference's 128 above
    (MNIST's 28 px included); the chosen width is in the config, so the saved model rebuilds
    without the rule."""
    assert default_width(resolution) == width
    model = build_model("convnet", channels=1, n_classes=3, resolution=resolution, width=None)
    assert model.config["width"] == width
    assert model.features[0].out_channels == width
    path = tmp_path / "model.safetensors"
    save_classifier(path, model)
    assert load_classifier(path, CPU).config["width"] == width


@pytest.mark.parametrize(("resolution", "depth", "last_map"),
                         [(8, 2, 2), (12, 2, 3), (28, 3, 3), (32, 3, 4), (48, 4, 3), (64, 4, 4),
                          (96, 5, 3), (128, 5, 4)])
def test_the_convnet_takes_any_resolution_as_the_reference_does(resolution: int, depth: int,
                                                                last_map: int) -> None:
    """ConvNet-3 at MNIST's 28 px (28 → 14 → 7 → 3, the reference's pools round down) and at
    32 px; resolutions that are not powers of two (a folder read at 48 or 96 px) work too."""
    model = build_model("convnet", channels=1, n_classes=4, resolution=resolution, width=8)
    assert model.config["depth"] == depth
    features = model.embed(torch.zeros(2, 1, resolution, resolution))
    assert features.shape == (2, 8 * last_map * last_map) == (2, model.embedding_dim)
    with pytest.raises(ValueError, match="resolution 3 is below the ConvNet's smallest, 4 px"):
        build_model("convnet", channels=1, n_classes=4, resolution=3)


def test_a_classifier_trained_without_a_width_follows_the_resolution() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(40) % 4
    model, _ = train_classifier(images, labels, 4, ClassifierSettings(width=None, steps=2),
                                seed=0, device=CPU)
    assert model.config["width"] == 64


def test_the_report_names_the_width_every_arm_trained_at() -> None:
    """metrics.json's `classifier.width`: the set width, else the resolution's; none for the
    architectures whose width is fixed."""
    from types import SimpleNamespace

    from synthfactory.ops.report.metrics_json import convnet_width

    assert convnet_width(SimpleNamespace(architecture="convnet", width=None), 8) == {"width": 64}
    assert convnet_width(SimpleNamespace(architecture="convnet", width=None), 32) == {"width": 128}
    assert convnet_width(SimpleNamespace(architecture="convnet", width=96), 8) == {"width": 96}
    assert convnet_width(SimpleNamespace(architecture="resnet18", width=None), 8) == {}
