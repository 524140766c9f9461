"""The retrieval baseline (`retrieved_set`): real images taken from an unlabeled pool instead of
generated (ops/curation/retrieval.py ranks them), written as `retrieved-00000.tar` (labels: the
class each image was retrieved for) and `summary.json`.

Two pools, two rankings:

- the real train split (`retrieval.pool` null): a seeded labelled part of `labelled_per_class`
  images per class (the few-shot shots when few-shot is configured) is taken out; the rest is
  the pool, labels hidden. The ranking's embedding (`labelled_convnet`: a ConvNet trained with
  the judge's recipe on the labelled part; `pixels`: mean-centred pixels) and its prototypes
  (the labelled part's class means) never see a pool label. The judge is not used: it trained
  on the whole train split, pool included.
- an external pool: ranked by the judge (it never saw the pool's labels), after the pool's
  near-copies of real test images are dropped by the leakage rule the report's contamination
  check uses (ops/curation/leakage.py, the `contamination` thresholds). That reads test pixels
  and the judge's features of them, never test labels or accuracies, like
  `filtered_set.drop_test_near_duplicates`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.curation.judge_record import judge_info
from synthfactory.ops.curation.judge_training import JudgeSettings, train_judge_convnet
from synthfactory.ops.curation.judges import ClipJudge, load_judge
from synthfactory.ops.curation.leakage import (copy_match, leakage_reference, nearest_test,
                                               pixel_vectors)
from synthfactory.ops.curation.retrieval import (Retrieved, class_prototypes, label_precision,
                                                 labelled_split, prototype_accuracy, retrieve)
from synthfactory.ops.data.pool import Pool, load_pool
from synthfactory.ops.data.real_images import (MANIFEST_JSON, read_classes, read_image_shape,
                                               read_split, read_training_images)
from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.artifacts import Log
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import Sample, write_shard
from synthfactory.ops.training.predict import embed

RETRIEVED_SHARD = "retrieved-00000.tar"
LISTED = 100  # near-copies listed by key in the summary (the count covers all of them)
EMBEDDINGS = {
    "labelled_convnet": "a ConvNet trained with the judge's recipe on the labelled part only",
    "pixels": "mean-centred pixels (no learned feature)",
}


@dataclass(frozen=True)
class RetrievalSettings:
    """What the params fix of the retrieved set: the `retrieval` section resolved (`per_class`
    and `labelled_per_class` as numbers), the judge's recipe (the labelled ConvNet trains with
    it) and the `contamination` rule an external pool is checked with."""

    pool: str | None
    per_class: int
    labelled_per_class: int
    embedding: str
    judge: JudgeSettings
    feature_threshold: float
    pixel_threshold: float
    pixel_resolution: int


@dataclass
class Ranking:
    """A pool and what ranks it: pool features, one query per class, and the summary's account
    of them (`query`, `embedding`, `labelled`, `test_near_copies`)."""

    pool: Pool
    features: np.ndarray
    queries: np.ndarray
    record: dict[str, Any]


@dataclass
class RetrievedSet:
    """The images retrieved from the pool, the class each was retrieved for and its score, and
    `summary` (summary.json's data; `write` adds the shard's sha256)."""

    pool: Pool
    found: Retrieved
    summary: dict[str, Any]

    @property
    def images(self) -> np.ndarray:
        return self.pool.images[self.found.indices]

    def write(self, directory: Path) -> dict[str, Any]:
        """`retrieved-00000.tar` and `summary.json` into `directory`; the summary."""
        pool, found = self.pool, self.found
        samples = (Sample(key=f"r{position:06d}", image=pool.images[index],
                          label=int(found.classes[position]),
                          meta={"pool_key": pool.keys[index],
                                "score": round(float(found.scores[position]), 6),
                                "hidden_label": int(pool.hidden_labels[index])})
                   for position, index in enumerate(found.indices))
        shard = write_shard(directory / RETRIEVED_SHARD, samples)
        self.summary["sha256"] = shard.sha256
        (directory / SUMMARY_JSON).write_text(dumps_json(self.summary))
        return self.summary


def retrieve_set(real_dir: Path, judge_dir: Path | None, settings: RetrievalSettings, *,
                 seed: int, device: Any, log: Log | None = None) -> RetrievedSet:
    """`settings.per_class` images per class from the pool, by cosine similarity to the class
    in the ranking's feature space; an image competes only for its most similar class. The pool
    is the train split less its labelled part (`settings.pool` None; with a CLIP judge at
    `judge_dir`, the whole train split, ranked by the class names' text) or the external pool,
    less its near-copies of test images (then `judge_dir` is the judge that ranks it)."""
    class_names = read_classes(real_dir)
    if settings.pool is None and judge_dir is not None and judge_info(judge_dir)["kind"] == "clip":
        # A CLIP judge ranks by the text of the class names: it learned nothing from the pool's
        # labels, so the whole train split is its pool (as the reference retrieves from LAION).
        ranking = clip_train_ranking(real_dir, judge_dir, settings, device=device)
    elif settings.pool is None:
        ranking = labelled_part_ranking(real_dir, settings, seed=seed, device=device, log=log)
    else:
        if judge_dir is None:
            raise ValueError("an external retrieval.pool is ranked by the judge: give its directory")
        ranking = judge_ranking(real_dir, judge_dir, settings, device=device)
    pool = ranking.pool
    found = retrieve(ranking.features, ranking.queries, settings.per_class)
    precision = label_precision(found.classes, pool.hidden_labels[found.indices], class_names)
    counts = np.bincount(found.classes, minlength=len(class_names))
    summary = {"pool": settings.pool or "real train split less the labelled part (labels hidden)",
               **ranking.record, "per_class": settings.per_class, "pool_size": len(pool.keys),
               "n_images": len(found.indices), "pool_labelled": pool.labelled,
               "pool_skipped": dict(sorted(pool.skipped.items())),
               "shortfall": {name: int(settings.per_class - count) for name, count in
                             zip(class_names, counts, strict=True)
                             if count < settings.per_class},
               "label_precision": precision}
    return RetrievedSet(pool, found, summary)


def clip_train_ranking(real_dir: Path, judge_dir: Path, settings: RetrievalSettings, *,
                       device: Any) -> Ranking:
    """The train split (labels hidden) ranked by a CLIP judge's image embeddings against the text
    embedding of each class: a zero-shot query that never saw the pool's labels."""
    judge = load_judge(judge_dir, device, settings.judge.batch_size)
    if not isinstance(judge, ClipJudge) or judge.class_embeddings is None:
        raise ValueError(f"{judge_dir} is not a CLIP judge with class text embeddings: rebuild "
                         "the judge with judge.backend: clip")
    images, labels, keys = read_split(real_dir, "train")
    return Ranking(Pool(images, labels, keys), judge.embed(images),
                   judge.class_embeddings.numpy(), {
                       "query": "CLIP text embedding of the class", "embedding": {"kind": "judge"},
                       "labelled": None, "test_near_copies": None})


def labelled_part_ranking(real_dir: Path, settings: RetrievalSettings, *, seed: int, device: Any,
                          log: Log | None = None) -> Ranking:
    """The train split's pool (less the labelled part) and its ranking, learned from the
    labelled part alone; the ranking's nearest-prototype accuracy on the validation split is
    measured (the pool's hidden labels are read only by `label_precision`)."""
    images, labels, keys = read_split(real_dir, "train")
    n_classes = len(read_classes(real_dir))
    shots = json.loads((real_dir / MANIFEST_JSON).read_text()).get("few_shot_keys")
    if shots is not None:  # few-shot: the K shots are the only labelled images there are
        is_shot = np.isin(np.asarray(keys), np.asarray(shots))
        labelled, rest = np.flatnonzero(is_shot), np.flatnonzero(~is_shot)
        source = "the few-shot shots (real_images.few_shot)"
    else:
        labelled, rest = labelled_split(labels, settings.labelled_per_class, seed)
        source = "a seeded per-class split of the train split"
    if len(rest) == 0:
        raise ValueError(f"the labelled part takes all {len(labels)} train images, leaving no "
                         "pool to retrieve from: lower retrieval.labelled_per_class "
                         f"({settings.labelled_per_class}) or give retrieval.pool")
    features_of, record = _embedding(settings, images[labelled], labels[labelled], n_classes,
                                     seed=seed, device=device, log=log)
    queries = class_prototypes(features_of(images[labelled]), labels[labelled], n_classes)
    val_images, val_labels, _ = read_split(real_dir, "val")
    record["val_prototype_accuracy"] = (prototype_accuracy(features_of(val_images), val_labels,
                                                           queries) if len(val_labels) else None)
    pool = Pool(images[rest], labels[rest], [keys[i] for i in rest])
    return Ranking(pool, features_of(pool.images), queries, {
        "query": f"the labelled part's class means in {EMBEDDINGS[settings.embedding]}",
        "embedding": record,
        "labelled": {"per_class": settings.labelled_per_class, "size": len(labelled),
                     "source": source, "excluded_from_pool": True},
        "test_near_copies": None})


def _embedding(settings: RetrievalSettings, images: np.ndarray, labels: np.ndarray,
               n_classes: int, *, seed: int, device: Any, log: Log | None) -> tuple[Any, dict]:
    """The features the train-split pool is ranked in, as a function of uint8 images, and its
    record; the ConvNet learns from the labelled `images` and `labels` only."""
    if settings.embedding == "pixels":
        size = max(images.shape[1:3])
        return (lambda batch: pixel_vectors(batch, size)), {"kind": "pixels"}
    if settings.embedding != "labelled_convnet":
        raise ValueError(f"retrieval.embedding {settings.embedding!r} is not one of "
                         f"{', '.join(EMBEDDINGS)}")
    model, history = train_judge_convnet(images, labels, n_classes, settings.judge,
                                         seed=derive_seed(seed, "retrieved_set", "embedding"),
                                         device=device, log=log)
    record = {"kind": "labelled_convnet", "n_train": len(labels), "steps": history["steps"],
              "epochs": settings.judge.epochs, "width": settings.judge.width}
    return (lambda batch: embed(model, batch, device=device)), record


def judge_ranking(real_dir: Path, judge_dir: Path, settings: RetrievalSettings, *,
                  device: Any) -> Ranking:
    """An external pool, its near-copies of real test images dropped (and counted), ranked by
    the judge: CLIP's text embedding of each class, or the ConvNet judge's class means over the
    real training images (the judge never saw the pool's labels)."""
    class_names = read_classes(real_dir)
    judge = load_judge(judge_dir, device, settings.judge.batch_size)
    height, _, channels = read_image_shape(real_dir)
    pool = load_pool(str(settings.pool), height, channels, class_names)
    features = judge.embed(pool.images)
    test = leakage_reference(real_dir, judge.embed, settings.pixel_resolution)
    near = nearest_test(features, pixel_vectors(pool.images, settings.pixel_resolution),
                        test.features, test.pixels, feature_threshold=settings.feature_threshold,
                        pixel_threshold=settings.pixel_threshold)
    copies = np.flatnonzero(near.is_copy)
    checked = {"dropped": len(copies), "checked": len(pool.keys),
               "rule": {"feature_threshold": settings.feature_threshold,
                        "pixel_threshold": settings.pixel_threshold,
                        "pixel_resolution": settings.pixel_resolution},
               "listed": [{"pool_key": pool.keys[i], **copy_match(near, int(i), test.keys)}
                          for i in copies[:LISTED]]}
    keep = ~near.is_copy
    pool = Pool(pool.images[keep], pool.hidden_labels[keep],
                [key for key, kept in zip(pool.keys, keep, strict=True) if kept], pool.skipped)
    if isinstance(judge, ClipJudge):
        assert judge.class_embeddings is not None  # set by load_judge
        queries, query = judge.class_embeddings.numpy(), "CLIP text embedding of the class"
    else:
        train_images, train_labels, _ = read_training_images(real_dir)
        queries = class_prototypes(judge.embed(train_images), train_labels, len(class_names))
        query = "mean judge embedding of the class's real training images"
    return Ranking(pool, features[keep], queries, {
        "query": query, "embedding": {"kind": "judge"}, "labelled": None,
        "test_near_copies": checked})
