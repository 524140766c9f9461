"""The embedded default source: scikit-learn's bundled 8×8 digits (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from synthfactory.ops.data.images import RealDataset, to_square

DIGIT_NAMES = [str(digit) for digit in range(10)]


def load_digits(resolution: int, channels: int) -> RealDataset:
    """scikit-learn's bundled 8×8 digits (1797 images, values 0..16) as uint8 images."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    resized = np.stack([to_square(Image.fromarray(image), resolution, channels) for image in images])
    return RealDataset(images=resized, labels=digits.target.astype(np.int64),
                       class_names=list(DIGIT_NAMES),
                       sources=[f"digits[{index}]" for index in range(len(images))])

