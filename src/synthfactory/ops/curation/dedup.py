"""Near-duplicate removal at scale: cluster the embeddings, compare within clusters (SemDeDup-style),
with the same greedy decisions as the whole-set filter (`filters.near_duplicates`).

The whole-set filter walks a class's samples in order (most confident first) and marks a sample
a duplicate of the most similar earlier *representative* when their cosine similarity reaches the
threshold; it builds the class's full similarity matrix, so its memory grows with the square of
the class size. Here a class is handled in bounded pieces:

1. Spherical k-means (Lloyd, seeded, on a bounded sample of the class) gives clusters of about
   `cluster_size`; one streaming pass assigns every sample to its nearest centroid and records
   each cluster's radius.
2. Cosine similarity ≥ t between unit vectors means Euclidean distance ≤ r = sqrt(2 − 2t). A
   sample x can only have such a neighbour in cluster B when ‖x − c_B‖ ≤ r + radius_B (triangle
   inequality), so each block of a cluster is compared, tile by tile, with its own cluster and
   the clusters that bound does not rule out; only the pairs above the threshold are kept.
3. The greedy rule then runs over those pairs in walking order.

Memory is O(n) integers, two tiles of features and one bucket of the pairs above the threshold
(they are spilled to files by walk position: a heavily duplicated set has many), never a
class's feature matrix; the clusters save the comparisons that the bound rules out (on diffuse
embeddings it rules out little, and the work approaches the all-pairs comparison).

Reference: SemDeDup (Abbas et al., 2023; github.com/facebookresearch/SemDeDup) clusters CLIP
embeddings with k-means (faiss, spherical) over the whole set and, within each cluster, removes
every sample whose similarity to another sample of the cluster exceeds 1 − ε, keeping the one
farthest from the centroid. Deviations, so that decisions equal the whole-set filter exactly:
clusters are made per class (duplicates are only sought within a class); the rule is the greedy
one in confidence order, not "farthest from the centroid"; and instead of comparing within a
cluster only (which misses pairs across a cluster boundary), every cluster that the triangle
inequality cannot rule out is compared. k-means is plain numpy: it runs on a bounded sample per
class, where faiss would add a dependency for no measured gain.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Rows compared at once: a BLOCK × BLOCK float32 similarity tile is 4 MiB.
BLOCK = 1024
# Walk positions per file of spilled pairs.
BUCKET = 1024
PAIR = np.dtype([("later", "<i8"), ("earlier", "<i8"), ("similarity", "<f4")])
# Slack on the triangle-inequality bound, far above float32 rounding of unit vectors.
BOUND_SLACK = 1e-4


@dataclass
class DedupStats:
    """How the work was split: clusters, similarities computed, the largest cluster."""

    clusters: int = 0
    pairs_compared: int = 0
    largest_cluster: int = 0

    def merge(self, other: DedupStats) -> None:
        """Add another class's counts (the largest cluster is the maximum)."""
        self.clusters += other.clusters
        self.pairs_compared += other.pairs_compared
        self.largest_cluster = max(self.largest_cluster, other.largest_cluster)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, exactly as `filters.near_duplicates` scales them."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


class PairBuckets:
    """The pairs above the threshold, spilled to files by the walk position of their later
    sample (BUCKET positions per file), so that the greedy pass holds one bucket at a time.

    A heavily duplicated set has many pairs per sample (every copy of an image with every other
    copy); kept in memory, they would grow faster than the set.
    """

    def __init__(self, directory: Path, rank: np.ndarray) -> None:
        """`rank[i]`: sample i's place in the walk, 0..n-1."""
        self.directory, self.rank = directory, rank
        self.n_buckets = max(1, math.ceil(len(rank) / BUCKET))

    def _path(self, bucket: int) -> Path:
        return self.directory / f"pairs-{bucket:06d}.bin"

    def add(self, later: np.ndarray, earlier: np.ndarray, similarity: np.ndarray) -> None:
        """Append pairs (later sample, earlier sample, similarity) to their buckets' files."""
        if not len(later):
            return
        bucket = self.rank[later] // BUCKET
        order = np.argsort(bucket, kind="stable")
        records = np.empty(len(later), PAIR)
        records["later"], records["earlier"] = later[order], earlier[order]
        records["similarity"] = similarity[order]
        bucket = bucket[order]
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], len(bucket)], strict=True):
            with open(self._path(int(bucket[start])), "ab") as handle:
                handle.write(records[start:stop].tobytes())

    def read(self, bucket: int) -> np.ndarray:
        """The pairs of one bucket (consumed: the file is removed)."""
        path = self._path(bucket)
        if not path.exists():
            return np.empty(0, PAIR)
        records = np.fromfile(path, PAIR)
        path.unlink()
        return records


def greedy_from_pairs(pairs: PairBuckets) -> tuple[np.ndarray, np.ndarray]:
    """The greedy rule over the pairs above the threshold: (is_duplicate, group).

    Each pair is (later sample, earlier sample in the walk, similarity). Walking in order, a
    sample is a duplicate of its most similar earlier *representative* among its pairs (ties:
    the earliest, as np.argmax over the representatives in the whole-set filter); a sample with
    no representative among its pairs is a representative (its group is itself).
    """
    rank = pairs.rank
    n = len(rank)
    is_duplicate = np.zeros(n, bool)
    group = np.arange(n, dtype=np.int64)
    is_representative = np.zeros(n, bool)
    in_walk = np.argsort(rank, kind="stable")
    for bucket in range(pairs.n_buckets):
        records = pairs.read(bucket)
        later, earlier = records["later"], records["earlier"]
        by_pair = np.lexsort((rank[earlier], rank[later]))
        later, earlier, similarity = later[by_pair], earlier[by_pair], records["similarity"][by_pair]
        rank_of_pair = rank[later]
        samples = in_walk[bucket * BUCKET:(bucket + 1) * BUCKET]
        bounds = np.searchsorted(rank_of_pair, rank[samples], side="left")
        ends = np.searchsorted(rank_of_pair, rank[samples], side="right")
        for sample, first, last in zip(samples, bounds, ends, strict=True):
            candidates = earlier[first:last]
            alive = is_representative[candidates]
            if alive.any():
                is_duplicate[sample] = True
                group[sample] = candidates[alive][int(np.argmax(similarity[first:last][alive]))]
            else:
                is_representative[sample] = True
    return is_duplicate, group


def spherical_kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 10) -> np.ndarray:
    """k centroids (mean vectors, not renormalised) of unit `points` by seeded Lloyd iterations."""
    generator = np.random.default_rng(seed)
    centroids = points[generator.choice(len(points), size=k, replace=False)].astype(np.float64)
    for _ in range(iterations):
        assign = nearest_centroid(points, centroids)[0]
        for cluster in range(k):
            members = points[assign == cluster]
            if len(members):  # an empty cluster keeps its centroid
                centroids[cluster] = members.mean(axis=0)
    return centroids


def nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each point's nearest centroid (Euclidean) and the distance to it."""
    points64 = points.astype(np.float64)
    squared = ((points64 ** 2).sum(1)[:, None] - 2 * points64 @ centroids.T
               + (centroids ** 2).sum(1)[None, :])
    assign = squared.argmin(axis=1)
    return assign, np.sqrt(np.maximum(squared[np.arange(len(points)), assign], 0.0))


def dedup_class(read: Callable[[np.ndarray], np.ndarray], n: int, walk: np.ndarray, *,
                threshold: float, cluster_size: int, seed: int,
                spill_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray, DedupStats]:
    """Greedy near-duplicates of one class of `n` samples, reading rows through `read`.

    `read(indices)` returns the float32 feature rows of sorted sample indices (0..n-1);
    `walk[i]` is sample i's place in the walking order (lower first; distinct). Returns
    is_duplicate and group (a sample index; a representative's group is itself), equal to
    `filters.near_duplicates` on the same samples and order, and the split statistics.

    Memory: O(n) integers, two BLOCK-row tiles of features and one bucket of the pairs above
    the threshold (the pairs are spilled under `spill_dir`, default a temporary directory);
    never the class's whole feature matrix.
    """
    with tempfile.TemporaryDirectory(prefix="pairs-", dir=spill_dir) as directory:
        return _dedup_class(read, n, walk, threshold=threshold, cluster_size=cluster_size,
                            seed=seed, directory=Path(directory))


def _dedup_class(read: Callable[[np.ndarray], np.ndarray], n: int, walk: np.ndarray, *,
                 threshold: float, cluster_size: int, seed: int,
                 directory: Path) -> tuple[np.ndarray, np.ndarray, DedupStats]:
    walk = np.asarray(walk)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64), DedupStats()
    reach = math.sqrt(max(0.0, 2.0 - 2.0 * threshold))
    if n <= 2 * cluster_size:  # small enough to compare as one cluster
        assign, k = np.zeros(n, np.int64), 1
        centroids, radii = np.zeros((1, 1)), np.full(1, np.inf)
    else:
        k = math.ceil(n / cluster_size)
        generator = np.random.default_rng(seed)
        sample = np.sort(generator.choice(n, size=min(n, max(4096, 20 * k)), replace=False))
        centroids = spherical_kmeans(unit_rows(read(sample)), k, seed=seed)
        assign = np.empty(n, np.int64)
        radii = np.zeros(k)
        for start in range(0, n, BLOCK):
            indices = np.arange(start, min(n, start + BLOCK))
            assign[indices], distance = nearest_centroid(unit_rows(read(indices)), centroids)
            np.maximum.at(radii, assign[indices], distance)
    by_cluster = np.argsort(assign, kind="stable")
    cluster_bounds = np.searchsorted(assign[by_cluster], np.arange(k + 1))
    members = [by_cluster[cluster_bounds[c]:cluster_bounds[c + 1]] for c in range(k)]
    rank = np.empty(n, np.int64)
    rank[np.argsort(walk, kind="stable")] = np.arange(n)
    pairs = PairBuckets(directory, rank)
    compared = 0
    for a in range(k):
        for a_start in range(0, len(members[a]), BLOCK):
            block_a = members[a][a_start:a_start + BLOCK]  # ascending: argsort is stable
            rows_a = unit_rows(read(block_a))
            if k == 1:
                candidates = np.zeros(1, np.int64)
            else:  # clusters that can hold a point within `reach` of some point of this block
                distance = nearest_all(rows_a, centroids)
                candidates = np.flatnonzero(
                    (distance <= reach + radii[None, :] + BOUND_SLACK).any(axis=0))
            for b in candidates:
                for b_start in range(0, len(members[b]), BLOCK):
                    block_b = members[b][b_start:b_start + BLOCK]
                    rows_b = unit_rows(read(block_b))
                    tile = rows_a @ rows_b.T
                    compared += tile.size
                    hit_a, hit_b = np.nonzero(tile >= threshold)
                    # Each pair once, from its later sample (whose candidates include the other's
                    # cluster by the triangle inequality).
                    keep = walk[block_b[hit_b]] < walk[block_a[hit_a]]
                    pairs.add(block_a[hit_a[keep]], block_b[hit_b[keep]],
                              tile[hit_a[keep], hit_b[keep]])
    is_duplicate, group = greedy_from_pairs(pairs)
    stats = DedupStats(clusters=k, pairs_compared=compared, largest_cluster=max(map(len, members)))
    return is_duplicate, group, stats


def nearest_all(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance of every point to every centroid."""
    points64 = points.astype(np.float64)
    squared = ((points64 ** 2).sum(1)[:, None] - 2 * points64 @ centroids.T
               + (centroids ** 2).sum(1)[None, :])
    return np.sqrt(np.maximum(squared, 0.0))
