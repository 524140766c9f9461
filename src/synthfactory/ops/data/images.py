"""Decoding one image into the stored form, and the in-memory dataset that sources build.

Every source (digits, image folder, WebDataset) turns what it reads into uint8 H×W×C images at
the configured resolution and channels with `to_square`, and counts what it skips and converts
through `ImageCollector`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes stored as they are; any other mode (CMYK, 16-bit, alpha, palette, ...) is converted.
NATIVE_MODES = {"L", "RGB"}


# What decoding one image gives: (why it is skipped, None) or (None, (image, its source mode)).
Decoded = tuple[str, None] | tuple[None, tuple[np.ndarray, str]]


@dataclass
class RealDataset:
    """Images (uint8 N×H×W×C), integer labels, class names, and what was skipped while loading."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    converted: Counter[str] = field(default_factory=Counter)  # source mode -> images converted


class ImageCollector:
    """Images accepted so far with their labels and sources; skips and conversions counted."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.labels: list[int] = []
        self.sources: list[str] = []
        self.skipped: Counter[str] = Counter()
        self.converted: Counter[str] = Counter()

    def add(self, decoded: Decoded, label: int, source: str) -> bool:
        """Keep a decoded image (counting a converted mode), or count why it was skipped."""
        reason, image = decoded
        if image is None:
            self.skipped[str(reason)] += 1
            return False
        array, mode = image
        if mode not in NATIVE_MODES:
            self.converted[mode] += 1
        self.images.append(array)
        self.labels.append(label)
        self.sources.append(source)
        return True

    def dataset(self, class_names: list[str]) -> RealDataset:
        """The collected images as a dataset."""
        return RealDataset(images=np.stack(self.images),
                           labels=np.asarray(self.labels, dtype=np.int64),
                           class_names=class_names, sources=self.sources,
                           skipped=self.skipped, converted=self.converted)


def concatenate(first: RealDataset, second: RealDataset) -> RealDataset:
    """Two datasets with the same classes as one (e.g. a separate test set after the train set)."""
    if first.class_names != second.class_names:
        raise ValueError(f"the test set's classes {second.class_names[:5]} differ from the train "
                         f"set's {first.class_names[:5]}")
    return RealDataset(images=np.concatenate([first.images, second.images]),
                       labels=np.concatenate([first.labels, second.labels]),
                       class_names=first.class_names, sources=first.sources + second.sources,
                       skipped=first.skipped + second.skipped,
                       converted=first.converted + second.converted)


def decode_image(source: Path | IO[bytes], resolution: int,
                 channels: int) -> Decoded:
    """Decode an image file or stream: (reason, None) to skip it, else (None, (image, mode)).

    Reasons: `too large` (over `PIL.Image.MAX_IMAGE_PIXELS`, checked from the header before
    decoding), `unrecognised image format`, `corrupt image`. An EXIF orientation is applied
    (the image is stored upright).
    """
    try:
        with Image.open(source) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > Image.MAX_IMAGE_PIXELS:
                return "too large", None
            image.load()
            # Cameras and phones store how the picture is turned in EXIF instead of turning the
            # pixels: apply it, so the image is upright as every viewer shows it.
            ImageOps.exif_transpose(image, in_place=True)
            return None, (to_square(image, resolution, channels), image.mode)
    except Image.DecompressionBombError:
        return "too large", None
    except UnidentifiedImageError:
        return "unrecognised image format", None
    except (OSError, SyntaxError, ValueError):  # what PIL raises on truncated or corrupt data
        return "corrupt image", None


def to_square(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Convert to grey/RGB, centre-crop to a square and resize: uint8 resolution×resolution×C."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # 16/32-bit grey: scale to 8 bits instead of letting PIL clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = max(array.max(), 1.0)
        image = Image.fromarray(np.round(array * (255.0 / peak)).astype(np.uint8))
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white rather than dropping alpha (which shows hidden pixels).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if channels == 1 else array

