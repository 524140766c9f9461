"""The retrieval baseline (`retrieved_set`): real images taken from an unlabeled pool by the
judge's features instead of generated (ops/curation/retrieval.py ranks them), written as
`retrieved-00000.tar` (labels: the class each image was retrieved for) and `summary.json`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthfactory.ops.curation.judges import ClipJudge, load_judge
from synthfactory.ops.curation.retrieval import (Retrieved, class_prototypes, label_precision,
                                                 retrieve)
from synthfactory.ops.data.pool import Pool, load_pool
from synthfactory.ops.data.real_images import (read_classes, read_image_shape, read_split,
                                               read_training_images)
from synthfactory.ops.storage import SUMMARY_JSON
from synthfactory.ops.storage.atomic import dumps_json
from synthfactory.ops.storage.shards import Sample, write_shard

RETRIEVED_SHARD = "retrieved-00000.tar"


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


def retrieve_set(real_dir: Path, judge_dir: Path, pool_source: str | None, per_class: int,
                 device: Any, batch_size: int) -> RetrievedSet:
    """`per_class` images per class from the pool `pool_source` (an image folder or WebDataset
    shards; None: the real train split with its labels hidden), ranked by cosine similarity in
    the judge's feature space to the class (CLIP's text embedding of the class, or the mean
    judge embedding of its real training images); an image competes only for its most similar
    class."""
    class_names = read_classes(real_dir)
    judge_model = load_judge(judge_dir, device, batch_size)
    if pool_source is None:
        images, labels, keys = read_split(real_dir, "train")  # all of train, labels hidden
        pool = Pool(images, labels, keys)
    else:
        height, _, channels = read_image_shape(real_dir)
        pool = load_pool(pool_source, height, channels, class_names)
    if isinstance(judge_model, ClipJudge):
        assert judge_model.class_embeddings is not None  # set by load_judge
        queries, query = judge_model.class_embeddings.numpy(), "CLIP text embedding of the class"
    else:
        train_images, train_labels, _ = read_training_images(real_dir)
        queries = class_prototypes(judge_model.embed(train_images), train_labels, len(class_names))
        query = "mean judge embedding of the class's real training images"
    found = retrieve(judge_model.embed(pool.images), queries, per_class)
    precision = label_precision(found.classes, pool.hidden_labels[found.indices], class_names)
    counts = np.bincount(found.classes, minlength=len(class_names))
    summary = {"pool": pool_source or "real train split (labels hidden)", "query": query,
               "per_class": per_class, "pool_size": len(pool.keys), "n_images": len(found.indices),
               "pool_labelled": pool.labelled, "pool_skipped": dict(sorted(pool.skipped.items())),
               "shortfall": {name: int(per_class - count) for name, count in
                             zip(class_names, counts, strict=True) if count < per_class},
               "label_precision": precision}
    return RetrievedSet(pool, found, summary)
