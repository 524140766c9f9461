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
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from synthfactory.ops.curation.scores import read_columns, read_scores_metadata
from synthfactory.ops.data.real_images import read_split
from synthfactory.ops.storage.shards import read_samples

if TYPE_CHECKING:
    import torch

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
    feature_at_pixel_nearest: np.ndarray  # float (N,): feature cosine to the pixel-nearest one
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
                                             "feature_at_pixel_nearest",
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
        result["feature_at_pixel_nearest"][rows] = features[np.arange(features.shape[0]),
                                                            indices["pixel_index"][rows]]
        both = (features >= feature_threshold) & (pixels >= pixel_threshold)
        match = np.where(both, pixels, -np.inf).argmax(axis=1)
        found = both.any(axis=1)
        is_copy[rows] = found
        indices["copy_index"][rows] = np.where(found, match, -1)
        picked = np.arange(len(match))
        result["copy_feature_similarity"][rows] = np.where(found, features[picked, match], np.nan)
        result["copy_pixel_similarity"][rows] = np.where(found, pixels[picked, match], np.nan)
    return NearestTest(is_copy=is_copy, **result, **indices)


@dataclass(frozen=True)
class LeakageReference:
    """The real test images as the leakage rule sees them: keys, unit judge features, pixel
    vectors. Their labels are never read."""

    keys: list[str]
    features: np.ndarray
    pixels: np.ndarray


def leakage_reference(real_dir: Path, embed: Callable[[np.ndarray], np.ndarray],
                      pixel_resolution: int) -> LeakageReference:
    """Embed and pixel-reduce the test split of `real_dir` (its labels dropped as it is read)."""
    images, _, keys = read_split(real_dir, "test")
    return reference_of(images, keys, embed, pixel_resolution)


def reference_of(test_images: np.ndarray, test_keys: list[str],
                 embed: Callable[[np.ndarray], np.ndarray],
                 pixel_resolution: int) -> LeakageReference:
    """Embed and pixel-reduce test images already in memory."""
    return LeakageReference(list(test_keys), unit_rows(embed(test_images)),
                            pixel_vectors(test_images, pixel_resolution))


def nearest_in_reference(images: np.ndarray, test: LeakageReference,
                         embed: Callable[[np.ndarray], np.ndarray], *, pixel_resolution: int,
                         feature_threshold: float, pixel_threshold: float) -> NearestTest:
    """`nearest_test` of images in memory (embedded and pixel-reduced here) against `test`."""
    return nearest_test(embed(images), pixel_vectors(images, pixel_resolution), test.features,
                        test.pixels, feature_threshold=feature_threshold,
                        pixel_threshold=pixel_threshold)


@dataclass(frozen=True)
class ScannedShards:
    """`nearest_test` over a set of shards, in shard order, with each sample's key and label."""

    keys: list[str]
    labels: np.ndarray
    shard_of: np.ndarray  # int: the index in the scanned shards of each sample's shard
    near: NearestTest


def scan_shards(shards: list[tuple[Path, Path | None]], test: LeakageReference,
                embed: Callable[[np.ndarray], np.ndarray] | None, *, feature_threshold: float,
                pixel_threshold: float, pixel_resolution: int) -> ScannedShards:
    """Nearest test image of every sample of `shards`, one shard's images in memory at a time.

    Each shard is a (tar, scores) pair: the judge features come from its `shard_scores` file
    (the `embeddings` column, written by the same judge) when it has one, else from `embed`
    (None: every shard must have scores). Pixels are always read from the tar, since the scores
    do not keep them.
    """
    keys: list[str] = []
    labels, shard_of, parts = [], [], []
    for tar_path, scores_path in shards:
        samples = list(read_samples([tar_path]))
        images = np.stack([s.image if s.image.ndim == 3 else s.image[:, :, None]
                           for s in samples])
        shard_keys = [s.key for s in samples]
        if scores_path is not None:
            if read_scores_metadata(scores_path)["keys"] != shard_keys:
                raise ValueError(f"{scores_path.name} does not list the samples of "
                                 f"{tar_path.name}: re-materialize its shard_scores partition")
            features = read_columns(scores_path, ("embeddings",))["embeddings"]
        elif embed is not None:
            features = embed(images)
        else:
            raise ValueError(f"{tar_path.name} has no scores and no judge was given to embed it")
        parts.append(nearest_test(features, pixel_vectors(images, pixel_resolution),
                                  test.features, test.pixels,
                                  feature_threshold=feature_threshold,
                                  pixel_threshold=pixel_threshold))
        keys += shard_keys
        labels.append(np.asarray([s.label for s in samples], dtype=np.int64))
        shard_of.append(np.full(len(samples), len(parts) - 1, np.int64))
    if not parts:
        raise ValueError("the leakage check needs at least one synthetic shard")
    near = NearestTest(**{name: np.concatenate([getattr(part, name) for part in parts])
                          for name in NearestTest.__dataclass_fields__})
    return ScannedShards(keys, np.concatenate(labels), np.concatenate(shard_of), near)


def copy_match(near: NearestTest, index: int, test_keys: list[str]) -> dict[str, Any]:
    """The manifest's record of a near-copy: its test image's key and both similarities."""
    return {"test_key": test_keys[int(near.copy_index[index])],
            "feature_similarity": round(float(near.copy_feature_similarity[index]), 6),
            "pixel_similarity": round(float(near.copy_pixel_similarity[index]), 6)}


def scored_near_copies(shards: list[tuple[Path, Path]], real_dir: Path, judge_dir: Path,
                       device: torch.device, *, batch_size: int, feature_threshold: float,
                       pixel_threshold: float, pixel_resolution: int
                       ) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
    """Which samples of the scored `shards` ((tar, scores) pairs, in filter order) are near-copies
    of a test image of `real_dir`, and each one's match by sample index: the judge's features
    from the scores (never re-scored), the pixels from the tars, the test split embedded once by
    the judge of `judge_dir` (at `batch_size`, a speed setting)."""
    # deferred: judges imports torch, and this module loads with the code location (the checks)
    from synthfactory.ops.curation.judges import load_judge

    judge = load_judge(judge_dir, device, batch_size)
    test = leakage_reference(real_dir, judge.embed, pixel_resolution)
    scanned = scan_shards(list(shards), test, None, feature_threshold=feature_threshold,
                          pixel_threshold=pixel_threshold, pixel_resolution=pixel_resolution)
    copies = scanned.near.is_copy
    return copies, {int(i): copy_match(scanned.near, int(i), test.keys)
                    for i in np.flatnonzero(copies)}


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-downsample one uint8 H×W×C image to `size` (grey stays one channel)."""
    grey = image.shape[2] == 1
    picture = Image.fromarray(image[:, :, 0] if grey else image)
    array = np.asarray(picture.resize(size, Image.Resampling.BOX), dtype=np.uint8)
    return array[:, :, None] if grey else array
