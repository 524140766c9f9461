"""A copy detector that survives small edits, with a threshold calibrated on distinct real images.

One similarity serves both copy checks: generated images against the real *test* images (a
generator that hands test images back) and generated or retrieved images against the real
*train* images (memorization: the images the generator learned from).

The similarity of two images is the maximum normalised cross-correlation (NCC; Lewis 1995,
"Fast normalized cross-correlation") over a small family of the edits a copy may have been
through, at a fixed working resolution (default 8×8, grey):

- brightness and contrast: NCC is computed on mean-centred, unit-norm pixels, so an affine
  change of intensities leaves it unchanged (up to clipping);
- shifts of up to `max_shift` pixels: the correlation is taken over the overlap of the two
  images at every offset in [-max_shift, max_shift]², each overlap re-normalised;
- horizontal flip: the query is also compared mirrored;
- blur: each side is also compared blurred (Gaussian σ in `blur_sigmas`, at the working
  resolution) against the other left sharp, which undoes a blurred copy without smoothing away
  the details that tell two distinct images apart;
- a small crop and resize: each side is also compared as its corner crops of `W − ⌈W/8⌉`
  pixels resized back to W (bilinear), i.e. a 1/8 zoom at W = 8;
- noise: averaged out by the correlation over the image (σ = 16 of 255 costs ≈ 0.01).

The edit list and the evaluation at a fixed false-positive rate follow the copy-detection
benchmark of Douze et al. 2021 ("The 2021 Image Similarity Dataset and Challenge", DISC21),
where a copy is a reference image after such edits and the threshold is set on distinct pairs.
The family is searched in two stages for speed: every reference is scored by a coarse NCC
(both sides blurred; shifts, flip and the crops), and the full family, blurs included, is
evaluated only on each query's `candidates` best references.

The threshold is calibrated on distinct real images (`calibrate`): for each real test image its
nearest real train image, and the threshold is the smallest value that at most `fpr` of those
pairs reach. A near-copy is a pair at or above it. On 8×8 digits, distinct pairs are close (the
99th percentile of nearest-pair NCC is ≈ 0.98): edits outside the family (a blur of σ = 0.5 or
1.5, a crop of 1/4) are found far less often; tests/ops/curation/test_copies.py records the rates.
Constant images (no contrast) have no direction and are similar to nothing (similarity 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import affine_transform, gaussian_filter

RESOLUTION = 8           # working resolution (pixels a side)
MAX_SHIFT = 2            # shifts searched, in working-resolution pixels
BLUR_SIGMAS = (1.0,)     # Gaussian σ of the blur family, in working-resolution pixels
COARSE_SIGMA = 1.0       # the first stage compares both sides blurred by this σ
CANDIDATES = 16          # references per query scored by the full family
CHUNK = 512             # queries per block: memory ≈ CHUNK × n_references × 4 bytes per matrix
DEFAULT_FPR = 0.01

Transform = Callable[[np.ndarray], np.ndarray]


def prepare(images: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """Images (uint8 0..255 or float 0..1; N×H×W or N×H×W×C, grey or RGB) as float32 grey
    N×resolution×resolution on the 0..1 scale (luma weights for RGB; box-resampled)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3, 4):
        raise ValueError(f"expected images of shape N×H×W or N×H×W×C (C = 1, 3 or 4), got "
                         f"{images.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    values = images.astype(np.float32) / scale
    if values.shape[3] == 1:
        grey = values[..., 0]
    else:
        grey = values[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if grey.shape[1:] != (resolution, resolution):
        grey = np.stack([np.asarray(Image.fromarray(image).resize(
            (resolution, resolution), Image.Resampling.BOX)) for image in grey])
    return np.ascontiguousarray(grey, dtype=np.float32)


def _blur(sigma: float) -> Transform:
    return lambda g: gaussian_filter(g, sigma=(0, sigma, sigma), mode="nearest")


def _crop_resize(offset_y: int, offset_x: int, side: int) -> Transform:
    """The crop of `side` pixels at (offset_y, offset_x) resized back to the full side (bilinear,
    pixel centres aligned as in PIL's resize)."""
    def transform(g: np.ndarray) -> np.ndarray:
        scale = side / g.shape[1]
        matrix = np.diag([1.0, scale, scale])
        offset = np.array([0.0, offset_y + scale / 2 - 0.5, offset_x + scale / 2 - 0.5])
        return affine_transform(g, matrix, offset=offset, order=1, mode="nearest")
    return transform


def _identity(g: np.ndarray) -> np.ndarray:
    return g


def _family(resolution: int, blur_sigmas: Sequence[float]) -> list[tuple[Transform, Transform]]:
    """(query transform, reference transform) pairs: identity, then each edit on either side."""
    side = resolution - max(1, -(-resolution // 8))
    edits: list[Transform] = [_blur(sigma) for sigma in blur_sigmas]
    edits += [_crop_resize(y, x, side) for y in (0, resolution - side) for x in (0, resolution - side)]
    return [(_identity, _identity)] + [(e, _identity) for e in edits] + [(_identity, e) for e in edits]


def _units(grey: np.ndarray, dy: int, dx: int, query_side: bool) -> np.ndarray:
    """Mean-centred unit rows of the overlap window of an offset (dy, dx) between query and
    reference, from the query's side or the reference's."""
    if not query_side:
        dy, dx = -dy, -dx
    size = grey.shape[1]
    window = grey[:, max(dy, 0): size + min(dy, 0), max(dx, 0): size + min(dx, 0)]
    flat = window.reshape(len(window), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 1e-6)


def _offsets(max_shift: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-max_shift, max_shift + 1)
            for dx in range(-max_shift, max_shift + 1)]


def _coarse(queries: np.ndarray, references: np.ndarray, max_shift: int) -> np.ndarray:
    """Max NCC over shifts, flips and the crop-resize edits, both sides blurred (Q×R): the
    candidate search. (Without the crops, a cropped copy's source is often not among the
    candidates: blur does not make NCC tolerant of a change of scale.)"""
    best = np.full((len(queries), len(references)), -1.0, np.float32)
    for to_query, to_reference in _family(queries.shape[1], ()):
        edited_query, edited_reference = to_query(queries), to_reference(references)
        for flipped in (edited_query, edited_query[:, :, ::-1]):
            for dy, dx in _offsets(max_shift):
                np.maximum(best, _units(flipped, dy, dx, True)
                           @ _units(edited_reference, dy, dx, False).T, out=best)
    return best


def _family_scores(queries: np.ndarray, references: np.ndarray, candidates: np.ndarray,
                   max_shift: int, blur_sigmas: Sequence[float]) -> np.ndarray:
    """Max NCC over the full family between each query and its candidate references (Q×K)."""
    best = np.full(candidates.shape, -1.0, np.float32)
    resolution = queries.shape[1]
    for to_query, to_reference in _family(resolution, blur_sigmas):
        edited_query, edited_reference = to_query(queries), to_reference(references)
        for flipped in (edited_query, edited_query[:, :, ::-1]):
            for dy, dx in _offsets(max_shift):
                query_units = _units(flipped, dy, dx, True)
                reference_units = _units(edited_reference, dy, dx, False)[candidates]
                np.maximum(best, np.einsum("qd,qkd->qk", query_units, reference_units), out=best)
    return best


def nearest(queries: np.ndarray, references: np.ndarray, *, resolution: int = RESOLUTION,
            max_shift: int = MAX_SHIFT, blur_sigmas: Sequence[float] = BLUR_SIGMAS,
            candidates: int = CANDIDATES, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """For each query image its most similar reference image under the edit family: (index int64
    (Q,), similarity float (Q,) in [-1, 1]). Images as `prepare` takes them; processed in blocks
    of `chunk` queries."""
    if len(references) == 0:
        raise ValueError("nearest needs at least one reference image")
    query_grey, reference_grey = prepare(queries, resolution), prepare(references, resolution)
    coarse_queries = gaussian_filter(query_grey, sigma=(0, COARSE_SIGMA, COARSE_SIGMA), mode="nearest")
    coarse_references = gaussian_filter(reference_grey, sigma=(0, COARSE_SIGMA, COARSE_SIGMA),
                                        mode="nearest")
    k = min(candidates, len(references))
    index = np.zeros(len(query_grey), np.int64)
    similarity = np.zeros(len(query_grey), np.float64)
    for start in range(0, len(query_grey), chunk):
        rows = slice(start, min(start + chunk, len(query_grey)))
        coarse = _coarse(coarse_queries[rows], coarse_references, max_shift)
        picked = np.argpartition(-coarse, k - 1, axis=1)[:, :k] if k < coarse.shape[1] else \
            np.tile(np.arange(coarse.shape[1]), (coarse.shape[0], 1))
        scores = _family_scores(query_grey[rows], reference_grey, picked, max_shift, blur_sigmas)
        best = scores.argmax(axis=1)
        index[rows] = picked[np.arange(len(best)), best]
        similarity[rows] = scores[np.arange(len(best)), best]
    return index, similarity


def calibrate(train: np.ndarray, test: np.ndarray, fpr: float = DEFAULT_FPR,
              **settings: Any) -> float:
    """The threshold at which at most `fpr` of the real test images are flagged as copies of their
    nearest real train image (distinct images): the smallest similarity above all but
    ⌊fpr × n_test⌋ of those nearest-pair similarities. `settings` go to `nearest`."""
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr = {fpr}: must be in [0, 1), e.g. 0.01")
    _, similarity = nearest(test, train, **settings)
    return threshold_for(similarity, fpr)


def threshold_for(distinct_similarities: np.ndarray, fpr: float) -> float:
    """The smallest threshold that at most ⌊fpr × n⌋ of the given distinct-pair similarities reach."""
    values = np.sort(np.asarray(distinct_similarities, dtype=np.float64))
    if len(values) == 0:
        raise ValueError("calibration needs at least one distinct pair")
    allowed = int(np.floor(fpr * len(values)))
    return float(np.nextafter(values[len(values) - allowed - 1], np.inf))


def near_copies(queries: np.ndarray, references: np.ndarray, threshold: float,
                **settings: Any) -> dict[str, np.ndarray]:
    """Which queries are near-copies of a reference (similarity ≥ `threshold`): `is_copy` (bool),
    `index` (the nearest reference), `similarity` (to it), one entry per query."""
    index, similarity = nearest(queries, references, **settings)
    return {"is_copy": similarity >= threshold, "index": index, "similarity": similarity}


def memorization(generated: np.ndarray, generated_labels: np.ndarray, train: np.ndarray,
                 train_labels: np.ndarray, threshold: float, *,
                 class_names: Sequence[str] | None = None, closest: int = 16,
                 **settings: Any) -> dict[str, Any]:
    """For each generated image its nearest real training image: the share that are near-copies
    (overall and per class of the generated image) and the `closest` pairs (generated index,
    train index, similarity, both classes) for a grid. Plain, JSON-ready dicts."""
    generated_labels, train_labels = np.asarray(generated_labels), np.asarray(train_labels)
    found = near_copies(generated, train, threshold, **settings)
    copies, index, similarity = found["is_copy"], found["index"], found["similarity"]
    names = (dict(enumerate(class_names)) if class_names is not None
             else {int(label): str(label) for label in np.unique(generated_labels)})
    per_class = {}
    for label, name in names.items():
        members = generated_labels == label
        n = int(members.sum())
        per_class[name] = {"n": n, "count": int(copies[members].sum()),
                           "rate": float(copies[members].mean()) if n else None}
    order = np.argsort(-similarity, kind="stable")[:closest]
    pairs = [{"generated_index": int(i), "train_index": int(index[i]),
              "similarity": round(float(similarity[i]), 6), "is_copy": bool(copies[i]),
              "generated_class": names.get(int(generated_labels[i]), str(generated_labels[i])),
              "train_class": names.get(int(train_labels[index[i]]), str(train_labels[index[i]]))}
             for i in order]
    return {"threshold": float(threshold), "n": len(copies), "count": int(copies.sum()),
            "rate": float(copies.mean()) if len(copies) else None, "per_class": per_class,
            "nearest_similarity": {q: round(float(np.quantile(similarity, float(q))), 6)
                                   for q in ("0.5", "0.9", "0.99")} if len(copies) else {},
            "closest_pairs": pairs}
