"""Near-copies of real test images among generated ones: the leakage check's one definition.

A generator trained on, or pretrained with, images that include the test set can hand those
images back; every synthetic arm then scores on its own training data. For each query image
(a synthetic one; for calibration, a real validation one) `nearest_test` finds its nearest real
test image in two spaces:

- the judge's features (cosine similarity): what the judge sees, robust to small pixel changes;
- pixels at low resolution (each image resized to at most `resolution`², mean-centred, cosine:
  a correlation), robust to brightness and to a different judge.

A query is a near-copy when one test image is within both thresholds at once. Requiring both
keeps either space from flagging alone: an undertrained judge maps many images to nearly the
same features, and two plain backgrounds correlate in pixels. Copy-detection work (Carlini et
al. 2023, pixel-space nearest neighbours; Somepalli et al. 2023, feature-space copy detection)
uses one space each; here both must agree, and the thresholds are the user's to set
(`contamination` in params.yaml). Only pixels and features of test images are read, never their
labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthfactory.ops.data.real_images import read_split

# Query rows compared with every test image at once: memory is about CHUNK × n_test × 32 bytes
# (two similarity matrices and their masks), 80 MB for 10 000 test images.
CHUNK = 256


@dataclass(frozen=True)
class NearestTest:
    """Per query image: its nearest test image in each space, and its near-copy match if any."""

    feature_similarity: np.ndarray  # float (N,): best cosine of judge features over test images
    feature_index: np.ndarray       # int (N,): the test image it belongs to
    pixel_similarity: np.ndarray    # float (N,): best low-resolution pixel correlation
    pixel_index: np.ndarray         # int (N,)
    is_copy: np.ndarray             # bool (N,): some test image within both thresholds
    copy_index: np.ndarray          # int (N,): that test image (the closest in pixels), or -1
    copy_feature_similarity: np.ndarray  # float (N,): the match's similarities (nan: no match)
    copy_pixel_similarity: np.ndarray


def pixel_vectors(images: np.ndarray, resolution: int) -> np.ndarray:
    """Unit, mean-centred pixel vectors of uint8 N×H×W×C images at most `resolution` pixels wide.

    Larger images are box-downsampled (what is left of a copy after resizing and compression);
    smaller ones are used as they are. A constant image becomes the zero vector (it correlates
    with nothing).
    """
    height, width = images.shape[1:3]
    if max(height, width) > resolution:
        size = (resolution, resolution)
        images = np.stack([_resize(image, size) for image in images])
    flat = images.reshape(len(images), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    return unit_rows(flat)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), in float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-12)


def nearest_test(query_features: np.ndarray, query_pixels: np.ndarray,
                 test_features: np.ndarray, test_pixels: np.ndarray, *,
                 feature_threshold: float, pixel_threshold: float) -> NearestTest:
    """Nearest test image of every query in both spaces, and which queries are near-copies.

    Features are normalised here; pixel vectors come from `pixel_vectors`. A query is a near-copy
    of test image j when cosine(features) ≥ `feature_threshold` and correlation(pixels) ≥
    `pixel_threshold` for the same j; its match is the closest such j in pixels.
    """
    if len(test_features) == 0:
        raise ValueError("the leakage check needs at least one test image")
    query_features, test_features = unit_rows(query_features), unit_rows(test_features)
    n = len(query_features)
    result = {name: np.zeros(n) for name in ("feature_similarity", "pixel_similarity",
                                             "copy_feature_similarity", "copy_pixel_similarity")}
    indices = {name: np.zeros(n, np.int64) for name in ("feature_index", "pixel_index",
                                                        "copy_index")}
    is_copy = np.zeros(n, bool)
    for start in range(0, n, CHUNK):
        rows = slice(start, min(start + CHUNK, n))
        features = query_features[rows] @ test_features.T
        pixels = query_pixels[rows] @ test_pixels.T
        for space, matrix in (("feature", features), ("pixel", pixels)):
            indices[f"{space}_index"][rows] = matrix.argmax(axis=1)
            result[f"{space}_similarity"][rows] = matrix.max(axis=1)
        both = (features >= feature_threshold) & (pixels >= pixel_threshold)
        match = np.where(both, pixels, -np.inf).argmax(axis=1)
        found = both.any(axis=1)
        is_copy[rows] = found
        indices["copy_index"][rows] = np.where(found, match, -1)
        picked = np.arange(len(match))
        result["copy_feature_similarity"][rows] = np.where(found, features[picked, match], np.nan)
        result["copy_pixel_similarity"][rows] = np.where(found, pixels[picked, match], np.nan)
    return NearestTest(is_copy=is_copy, **result, **indices)


def near_copies_of_test(images: np.ndarray, features: np.ndarray, real_dir: Path,
                        embed: Callable[[np.ndarray], np.ndarray], *, feature_threshold: float,
                        pixel_threshold: float, pixel_resolution: int
                        ) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
    """Which images (with their judge `features`) are near-copies of a test image of `real_dir`,
    and for each one the test key and both similarities (None for the others).

    Reads the test split's pixels and keys; its labels are dropped as they are read.
    """
    test_images, _, test_keys = read_split(real_dir, "test")
    near = nearest_test(features, pixel_vectors(images, pixel_resolution), embed(test_images),
                        pixel_vectors(test_images, pixel_resolution),
                        feature_threshold=feature_threshold, pixel_threshold=pixel_threshold)
    matches: list[dict[str, Any] | None] = [
        {"test_key": test_keys[near.copy_index[i]],
         "feature_similarity": round(float(near.copy_feature_similarity[i]), 6),
         "pixel_similarity": round(float(near.copy_pixel_similarity[i]), 6)}
        if near.is_copy[i] else None for i in range(len(images))]
    return near.is_copy, matches


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-downsample one uint8 H×W×C image to `size` (grey stays one channel)."""
    grey = image.shape[2] == 1
    picture = Image.fromarray(image[:, :, 0] if grey else image)
    array = np.asarray(picture.resize(size, Image.Resampling.BOX), dtype=np.uint8)
    return array[:, :, None] if grey else array
