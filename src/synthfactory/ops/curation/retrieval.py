"""The retrieval baseline: real images taken from an unlabeled pool instead of generated ones.

Following Geng et al., "The Unmet Promise of Synthetic Training Images" (2024): for each class,
rank the pool by similarity to the class and keep as many images as the synthetic arm has,
labelled with that class. Their reference retrieves from LAION-2B with the CLIP text embedding of
the class name (after a substring filter on captions) and de-duplicates. Here:

- an external pool (`retrieval.pool`) is ranked in the judge's feature space, which never saw
  its labels: the class query is the CLIP text embedding the CLIP judge holds (templates
  averaged), or, with the embedded ConvNet judge, the mean judge embedding of the class's real
  training images (a prototype, as in nearest-class-mean retrieval);
- the default pool, the real train split with its labels hidden, is first split (seeded, per
  class: `labelled_split`) into a small labelled part and the pool, the rest. The embedding and
  the prototypes that rank the pool learn from the labelled part only (a ConvNet trained on it,
  or mean-centred pixels, which learned nothing), never from the pool's labels; the ConvNet
  judge, trained on the whole train split, would rank the pool by the very labels it hides;
- similarity is the cosine in that feature space;
- deviation: the pool is small and closed, so an image is a candidate only for the class it is
  most similar to — no image is retrieved twice under two labels; there are no captions, so no
  substring filter.

Where the pool has hidden labels, the label precision of the retrieved set says how often a
retrieved image's true class is the class it was retrieved for: a measurement, never an input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthfactory.ops.data.pool import NO_LABEL
from synthfactory.ops.seeds import rng


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def class_prototypes(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """K×D unit mean embeddings of each class's (unit) image features: the ConvNet judge's query."""
    unit = unit_rows(features)
    missing = [label for label in range(n_classes) if not np.any(labels == label)]
    if missing:
        raise ValueError(f"classes {missing[:5]} have no real training image to build a "
                         "retrieval query from")
    return unit_rows(np.stack([unit[labels == label].mean(axis=0) for label in range(n_classes)]))


def labelled_split(labels: np.ndarray, per_class: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the labelled part (`per_class` seeded images of each class, but at most half
    of a class, at least one, so every class keeps images in the pool) and of the pool (the
    rest), each in ascending order: disjoint, together everything."""
    if per_class <= 0:
        raise ValueError(f"retrieval.labelled_per_class {per_class} must be positive")
    labelled = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = rng(seed, "retrieved_set", "labelled", int(label)).permutation(len(members))
        labelled[members[order[:min(per_class, max(1, len(members) // 2))]]] = True
    return np.flatnonzero(labelled), np.flatnonzero(~labelled)


def prototype_accuracy(features: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> float:
    """How often an image's most similar class query is its class: the ranking as a
    nearest-class-mean classifier, measured on labelled images it did not learn from."""
    if len(labels) == 0:
        return float("nan")
    predicted = (unit_rows(features) @ unit_rows(queries).T).argmax(axis=1)
    return float(np.mean(predicted == labels))


@dataclass(frozen=True)
class Retrieved:
    """Indices into the pool, the class each was retrieved for, and its similarity to that class."""

    indices: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def retrieve(pool_features: np.ndarray, queries: np.ndarray, per_class: int) -> Retrieved:
    """Up to `per_class` pool images per class, most similar first.

    Each pool image competes only for its most similar class (ties: the lower class index), so
    a class whose candidates run out gets fewer than `per_class`. Order: by class, then by
    decreasing similarity (ties in pool order), so the result is deterministic.
    """
    if per_class <= 0:
        raise ValueError(f"retrieval per_class {per_class} must be positive")
    similarity = unit_rows(pool_features) @ unit_rows(queries).T
    best = similarity.argmax(axis=1)
    indices, classes, scores = [], [], []
    for label in range(queries.shape[0]):
        members = np.flatnonzero(best == label)
        chosen = members[np.argsort(-similarity[members, label], kind="stable")[:per_class]]
        indices.append(chosen)
        classes.append(np.full(len(chosen), label, np.int64))
        scores.append(similarity[chosen, label])
    return Retrieved(np.concatenate(indices).astype(np.int64), np.concatenate(classes),
                     np.concatenate(scores))


def label_precision(retrieved_classes: np.ndarray, hidden_labels: np.ndarray,
                    class_names: list[str]) -> dict[str, object] | None:
    """Overall and per-class fraction of retrieved images whose hidden label is their class.

    Only images with a hidden label count; None when none has one (an unlabeled pool).
    """
    known = hidden_labels != NO_LABEL
    if not known.any():
        return None
    correct = retrieved_classes[known] == hidden_labels[known]
    per_class = {}
    for label, name in enumerate(class_names):
        members = retrieved_classes[known] == label
        per_class[name] = float(np.mean(correct[members])) if members.any() else None
    return {"overall": float(np.mean(correct)), "labelled": int(known.sum()),
            "per_class": per_class}
