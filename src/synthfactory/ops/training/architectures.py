"""Classifier architectures: the DD ConvNet, ResNet-18/50 and VGG-11, written here.

torchvision's compiled ops do not load beside the CPU torch wheel used here, and timm needs
torchvision, so the standard definitions live in the project:

- `convnet`: the dataset-distillation ConvNet (Zhao et al.): `depth` blocks of conv3×3 →
  instance norm → ReLU → 2×2 average pool, then one linear layer. The depth follows the
  resolution (ConvNet-3 at 28 and 32 px, ConvNet-4 at 64 px; any resolution, as in the
  reference, whose pools round down). Its width is 128 (the reference's) unless given;
  `width=None` follows the resolution too (`default_width`: 64 up to 16 px), which
  `classifiers.width: null` asks for.
- `resnet18`, `resnet50`: He et al. with batch norm. Images of at most 64 px get the widely used
  CIFAR stem (one 3×3 conv, stride 1, no max-pool: 11,173,962 parameters for ResNet-18 at 10
  classes), larger ones the ImageNet stem (7×7 conv, stride 2, 3×3 max-pool). Weights are
  initialised as torchvision does (Kaiming normal, fan-out; norm weights 1, biases 0).
- `vgg11`: configuration "A" of Simonyan & Zisserman with batch norm and one linear layer on
  the pooled 512 features, as in the CIFAR definitions; at images below 32 px the max-pools that
  would shrink a 1×1 map are left out (the weights and the parameter count are the same).

`norm` switches the ResNets and VGG to instance norm (the DD papers' cross-architecture tables
use instance-norm variants). Every model has `embed(x)` (penultimate features, the judge's
feature space) and `config`, the JSON that `build_model(**config)` rebuilds it from.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

ARCHITECTURES = ("convnet", "resnet18", "resnet50", "vgg11")
Norm = Literal["batch", "instance"]
# The largest images that get the CIFAR stem (3×3 conv, no max-pool) in the ResNets.
CIFAR_STEM_MAX_RESOLUTION = 64
# The reference ConvNet's width, defined for 28–32 px inputs (MNIST, CIFAR), and the width that
# smaller images get from `default_width`.
REFERENCE_WIDTH = 128
SMALL_IMAGE_WIDTH = 64
VGG11_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512,
                                       "M")


def default_depth(resolution: int) -> int:
    """ConvNet blocks for a resolution: round(log2(resolution)) − 2, at least 2 (8 px → 2, the
    reference's ConvNet-3 at 28 px (MNIST) and 32 px (CIFAR), 64 → 4, 128 → 5).

    Any resolution from 4 px works: each block's average pool halves the map, rounding down as
    the reference's does (28 → 14 → 7 → 3), so a folder read at 28, 48 or 96 px needs no
    resizing to a power of two.
    """
    if resolution < 4:
        raise ValueError(f"resolution {resolution} is below the ConvNet's smallest, 4 px")
    return max(2, round(math.log2(resolution)) - 2)


def default_width(resolution: int) -> int:
    """ConvNet width for a resolution: 64 up to 16 px, the reference's 128 above.

    Chosen on validation splits (`benchmarks/classifier_rate.py --widths`, docs/results.md):
    at 8 and 16 px, on the digits and the grey and colour folders of
    `benchmarks/beyond_digits.py`, real and synthetic training sets, width 64 was
    indistinguishable from 128 (paired over 5 seeds × validation images, never below it by
    more than 0.2 points) at 1/3–1/4 of the step time; 32 was worse on colour. No folder above
    16 px was measured, so above 16 px (the reference's 28-px MNIST included) the width stays
    the reference's.
    """
    return SMALL_IMAGE_WIDTH if resolution <= 16 else REFERENCE_WIDTH


def resolved_width(width: int | None, resolution: int) -> int:
    """A ConvNet width as set, or the resolution's (`default_width`) when None: the one rule
    the classifiers, the distilled arm and the report's recipe line all read."""
    return default_width(resolution) if width is None else width


def _norm(kind: Norm, channels: int) -> nn.Module:
    """Batch norm, or instance norm with affine weights (GroupNorm with a group per channel)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(channels, channels, affine=True)


class ConvNet(nn.Module):
    """conv-norm-relu-pool blocks and a linear head; `embed` gives the flattened features."""

    def __init__(self, channels: int, n_classes: int, resolution: int,
                 width: int | None = REFERENCE_WIDTH, depth: int | None = None) -> None:
        super().__init__()
        depth = default_depth(resolution) if depth is None else depth
        width = resolved_width(width, resolution)
        if resolution >> depth < 1:
            raise ValueError(f"depth {depth} pools a {resolution}px image below 1px")
        blocks: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth):
            blocks += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                       # GroupNorm with one group per channel is instance norm with affine weights,
                       # the "instancenorm" of the DD ConvNet.
                       nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True),
                       nn.AvgPool2d(kernel_size=2, stride=2)]
            in_channels = width
        self.features = nn.Sequential(*blocks)
        self.embedding_dim = width * (resolution >> depth) ** 2
        self.classifier = nn.Linear(self.embedding_dim, n_classes)
        self.config = {"channels": channels, "n_classes": n_classes, "resolution": resolution,
                       "width": width, "depth": depth}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Flattened features of N×C×H×W images (the judge's feature space)."""
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classifier(self.embed(images))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, channels)
        self.shortcut = _shortcut(in_channels, channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 convolutions (×4 channels out) with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, norm: Norm) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = _norm(norm, channels)
        # The stride sits on the 3×3 convolution (torchvision's "ResNet v1.5").
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = _norm(norm, channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = _norm(norm, out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck path plus the shortcut, then ReLU."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: Norm) -> nn.Module:
    """Identity, or a strided 1×1 projection when the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         _norm(norm, out_channels))


class ResNet(nn.Module):
    """ResNet with the CIFAR stem (≤ 64 px) or the ImageNet stem, global average pooling."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int],
                 channels: int, n_classes: int, resolution: int, norm: Norm = "batch") -> None:
        super().__init__()
        if resolution <= CIFAR_STEM_MAX_RESOLUTION:
            self.stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False),
                                      _norm(norm, 64), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, 64, 7, 2, 3, bias=False),
                                      _norm(norm, 64), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        in_channels = 64
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                stages.append(block(in_channels, width, stride, norm))
                in_channels = width * block.expansion
        self.layers = nn.Sequential(*stages)
        self.embedding_dim = in_channels
        self.classifier = nn.Linear(in_channels, n_classes)
        _initialise(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features of the last stage."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(
            self.layers(self.stem(images)), 1), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classifier(self.embed(images))


class VGG(nn.Module):
    """VGG-11 (configuration A) with norm after every convolution and a linear head on 512."""

    def __init__(self, channels: int, n_classes: int, resolution: int,
                 norm: Norm = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = channels, resolution
        for item in VGG11_LAYERS:
            if item == "M":
                if size > 1:  # a 1×1 map cannot be pooled: small images skip the last pools
                    layers.append(nn.MaxPool2d(2, 2))
                    size //= 2
                continue
            layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), _norm(norm, int(item)),
                       nn.ReLU(inplace=True)]
            in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.embedding_dim = in_channels
        self.classifier = nn.Linear(in_channels, n_classes)
        _initialise(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features (1×1 already at 32 px, as in the CIFAR VGG)."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(images), 1), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.classifier(self.embed(images))


def _initialise(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming normal (fan-out, ReLU) convolutions, norm weights
    1 and biases 0, linear layers left at PyTorch's default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_model(architecture: str = "convnet", *, channels: int, n_classes: int,
                resolution: int, width: int | None = REFERENCE_WIDTH, depth: int | None = None,
                norm: Norm = "batch") -> nn.Module:
    """A fresh model of `architecture` for images of `channels` × `resolution`².

    `width` and `depth` are the ConvNet's, None following the resolution (`default_width`,
    `default_depth`; the standard architectures have fixed widths);
    `norm` is the ResNets' and VGG's. The returned model's `config` rebuilds it.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"classifiers.architecture {architecture!r} is not one of "
                         f"{', '.join(ARCHITECTURES)}")
    if norm not in ("batch", "instance"):
        raise ValueError(f"norm {norm!r} is not one of batch, instance")
    model: nn.Module
    config: dict[str, Any] = {"architecture": architecture, "channels": channels,
                              "n_classes": n_classes, "resolution": resolution}
    if architecture == "convnet":
        model = ConvNet(channels, n_classes, resolution, width=width, depth=depth)
        config |= {"width": model.config["width"], "depth": model.config["depth"]}
    elif architecture == "vgg11":
        model = VGG(channels, n_classes, resolution, norm=norm)
        config["norm"] = norm
    else:
        block, layers = ((BasicBlock, [2, 2, 2, 2]) if architecture == "resnet18"
                         else (Bottleneck, [3, 4, 6, 3]))
        model = ResNet(block, layers, channels, n_classes, resolution, norm=norm)
        config["norm"] = norm
    model.config = config
    return model


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its `config` (a config without `architecture` is a ConvNet's)."""
    config = dict(config)
    architecture = config.pop("architecture", "convnet")
    return build_model(architecture, **config)


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
