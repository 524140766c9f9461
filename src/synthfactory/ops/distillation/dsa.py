"""Differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021).

Every transformation is differentiable with respect to the images, so a learned image gets
gradients through its augmentation. *Siamese*: inside one matching step the real batch of a class
and the learned images of that class go through the same transformation (one parameter draw
shared by the whole batch), so that matching compares like with like. When a network is trained
on a set (evaluation, the inner loops of gradient matching, experts, trajectory-matching student
steps) every image draws its own parameters.

Reference implementation (VICO-UoE/DatasetCondensation `utils.py`, `ParamDiffAug` and
`DiffAugment`; mtt-distillation copies it) and how this one differs:

- the same groups and ranges: `color` (brightness + U(−0.5, 0.5)·1.0, saturation ×U(0, 2) around
  the per-pixel channel mean, contrast ×U(0.5, 1.5) around the image mean), `crop` (an integer
  translation within ±int(0.125·size + 0.5) px), `cutout` (an int(0.5·size + 0.5) square),
  `flip` (p = 0.5), `scale` (x and y independently in [1/1.2, 1.2]), `rotate` (±15°); and their
  'S' mode: one group is drawn per call and applied to the whole batch;
- the reference pads and cuts out with 0 in its mean/std-normalised space (the dataset mean);
  here images are in [-1, 1] and `fill` says what padding and cutout write (default −1, the
  digits' background; 0 reproduces mid-grey);
- the reference draws from torch's global RNG reseeded from the wall clock; here every draw comes
  from a `torch.Generator` the caller seeds, so runs are reproducible;
- the reference builds affine matrices in Python loops; here they are built batched.

Digits must not be flipped: the default strategy leaves `flip` out (as the DSA readme says for
MNIST and SVHN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_scale_rotate"


@dataclass(frozen=True)
class DSA:
    """Augmentation ranges (the reference's `ParamDiffAug` defaults) and the groups to draw from."""

    strategy: str = DEFAULT_STRATEGY
    scale: float = 1.2
    rotate_degrees: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    flip_probability: float = 0.5
    fill: float = -1.0

    def __post_init__(self) -> None:
        unknown = [group for group in self.groups if group not in GROUPS]
        if not self.groups or unknown:
            raise ValueError(f"DSA strategy {self.strategy!r}: groups must be '_'-joined names "
                             f"from {', '.join(GROUPS)}")

    @property
    def groups(self) -> list[str]:
        """The groups of the strategy, in order."""
        return [group for group in self.strategy.split("_") if group]

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator
               ) -> dict[str, torch.Tensor | str]:
        """One group and its parameters for `n` images (n = 1: one draw for a whole batch)."""
        groups = self.groups
        group = groups[int(torch.randint(len(groups), (1,), generator=generator))]
        height, width = size
        params: dict[str, torch.Tensor | str] = {"group": group}
        if group == "color":
            for key in ("brightness", "saturation", "contrast"):
                params[key] = torch.rand(n, 1, 1, 1, generator=generator)
        elif group == "crop":
            shift_y, shift_x = int(height * self.crop + 0.5), int(width * self.crop + 0.5)
            params["dy"] = torch.randint(-shift_y, shift_y + 1, (n, 1, 1), generator=generator)
            params["dx"] = torch.randint(-shift_x, shift_x + 1, (n, 1, 1), generator=generator)
        elif group == "cutout":
            cut_y, cut_x = _cut_size(height, self.cutout), _cut_size(width, self.cutout)
            params["cy"] = torch.randint(0, height + (1 - cut_y % 2), (n, 1, 1),
                                         generator=generator)
            params["cx"] = torch.randint(0, width + (1 - cut_x % 2), (n, 1, 1),
                                         generator=generator)
        elif group == "flip":
            params["flip"] = torch.rand(n, 1, 1, 1, generator=generator) < self.flip_probability
        elif group == "scale":
            low = 1.0 / self.scale
            params["sx"] = torch.rand(n, generator=generator) * (self.scale - low) + low
            params["sy"] = torch.rand(n, generator=generator) * (self.scale - low) + low
        else:  # rotate
            limit = math.radians(self.rotate_degrees)
            params["angle"] = (torch.rand(n, generator=generator) * 2 - 1) * limit
        return params

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor | str]) -> torch.Tensor:
        """Apply drawn parameters to N×C×H×W images (parameters of size 1 broadcast)."""
        group = params["group"]
        n, _, height, width = images.shape
        device = images.device
        if group == "color":
            out = images + (_t(params, "brightness", device) - 0.5) * self.brightness
            mean = out.mean(dim=1, keepdim=True)
            out = (out - mean) * (_t(params, "saturation", device) * self.saturation) + mean
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            return (out - mean) * (_t(params, "contrast", device) + self.contrast) + mean
        if group == "flip":
            return torch.where(_t(params, "flip", device), images.flip(3), images)
        if group in ("scale", "rotate"):
            if group == "scale":
                sx, sy = _t(params, "sx", device), _t(params, "sy", device)
                zero = torch.zeros_like(sx)
                rows = (torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1))
            else:
                angle = _t(params, "angle", device)
                cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
                rows = (torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1))
            theta = torch.stack(rows, 1).to(images.dtype).expand(n, 2, 3)
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            # grid_sample pads with zeros: shift so that what it pads with is `fill`.
            return F.grid_sample(images - self.fill, grid, align_corners=False) + self.fill
        if group == "crop":
            ys = (torch.arange(height, device=device).view(1, height, 1)
                  + _t(params, "dy", device)).expand(n, height, width)
            xs = (torch.arange(width, device=device).view(1, 1, width)
                  + _t(params, "dx", device)).expand(n, height, width)
            inside = ((ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)).unsqueeze(1)
            batch = torch.arange(n, device=device).view(n, 1, 1).expand(n, height, width)
            moved = images.permute(0, 2, 3, 1)[batch, ys.clamp(0, height - 1),
                                               xs.clamp(0, width - 1)].permute(0, 3, 1, 2)
            return torch.where(inside, moved, torch.full_like(moved, self.fill))
        # cutout
        cut_y, cut_x = _cut_size(height, self.cutout), _cut_size(width, self.cutout)
        top = _t(params, "cy", device) - cut_y // 2
        left = _t(params, "cx", device) - cut_x // 2
        ys = torch.arange(height, device=device).view(1, height, 1)
        xs = torch.arange(width, device=device).view(1, 1, width)
        hole = ((ys >= top) & (ys < top + cut_y) & (xs >= left) & (xs < left + cut_x))
        hole = hole.expand(n, height, width).unsqueeze(1)
        return torch.where(hole, torch.full_like(images, self.fill), images)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment with parameters drawn per image (training a network on a set)."""
        return self.apply(images, self.sample(images.shape[0], images.shape[-2:], generator))

    def siamese(self, generator: torch.Generator, *batches: torch.Tensor) -> list[torch.Tensor]:
        """Augment several batches with one shared draw (real and learned images of a class)."""
        params = self.sample(1, batches[0].shape[-2:], generator)
        return [self.apply(batch, params) for batch in batches]


# The reference's augmentation: the default of every method that takes a `dsa`.
DEFAULT_DSA = DSA()


def _cut_size(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def _t(params: dict[str, torch.Tensor | str], key: str, device: torch.device) -> torch.Tensor:
    value = params[key]
    assert isinstance(value, torch.Tensor)
    return value.to(device)
