"""Differentiable siamese augmentation: the same draw on both batches, per-image draws when
training, gradients through every group, seeded, and the fill value at the borders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthfactory.ops.distillation.dsa import DSA, GROUPS


def _images(n: int = 6, size: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=generator) * 2 - 1


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_changes_images_and_passes_gradients(group: str) -> None:
    dsa = DSA(strategy=group, flip_probability=1.0)
    images = _images().requires_grad_(True)
    out = dsa(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape
    assert not torch.allclose(out, images)  # guards a group that silently does nothing
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_siamese_batches_share_one_draw_and_training_draws_per_image() -> None:
    dsa = DSA(strategy="rotate")
    a = _images()
    first, second = dsa.siamese(torch.Generator().manual_seed(1), a, a.clone())
    assert torch.equal(first, second)  # the same parameters for real and learned images
    single = dsa.siamese(torch.Generator().manual_seed(1), a[:1])[0]
    assert torch.allclose(single, first[:1])  # one draw for the whole batch
    per_image = dsa(torch.cat([a[:1]] * 4), torch.Generator().manual_seed(1))
    assert not torch.allclose(per_image[0], per_image[1])  # training: each image its own draw


def test_draws_are_seeded() -> None:
    dsa = DSA()
    runs = [dsa(_images(), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_padding_and_cutout_write_the_fill_value() -> None:
    ones = torch.ones(1, 1, 8, 8)
    shifted = DSA(strategy="crop", fill=-1.0).apply(ones, {
        "group": "crop", "dy": torch.tensor([[[1]]]), "dx": torch.tensor([[[0]]])})
    assert shifted[0, 0, -1].tolist() == [-1.0] * 8 and shifted[0, 0, 0].tolist() == [1.0] * 8
    cut = DSA(strategy="cutout", fill=0.5).apply(ones, {
        "group": "cutout", "cy": torch.tensor([[[4]]]), "cx": torch.tensor([[[4]]])})
    assert float((cut == 0.5).sum()) == 16  # a 4×4 square at 8 px (ratio 0.5)
    small = DSA(strategy="scale", fill=-1.0).apply(ones, {
        "group": "scale", "sx": torch.tensor([1.2]), "sy": torch.tensor([1.2])})
    assert float(small[0, 0, 0, 0]) < 1.0  # zooming out brings in the background at the corner


def test_bad_strategy_names_the_groups() -> None:
    with pytest.raises(ValueError, match="groups must be '_'-joined names from color, crop"):
        DSA(strategy="color_blur")


def test_flip_is_left_out_by_default() -> None:
    assert "flip" not in DSA().groups
    assert np.isclose(DSA().fill, -1.0)
