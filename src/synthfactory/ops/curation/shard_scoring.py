"""The judge's scores of synthetic shards (`shard_scores`), one partition per shard: each shard
scored and published as `scores-<key>.safetensors`, or kept when its scores already describe
the same shard bytes under the same judge. The judge is loaded once per run, and only when a
shard needs it; two runs of one partition take turns (its lease in the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthfactory.ops.curation.judge_record import judge_info
from synthfactory.ops.curation.judges import ClipJudge, load_judge
from synthfactory.ops.curation.scores import (score_shard, scores_are_current, scores_name,
                                              write_scores)
from synthfactory.ops.storage.artifacts import Artifacts, Log
from synthfactory.ops.storage.shards import read_shard_info

ASSET = "shard_scores"


@dataclass
class ShardScoring:
    """What a run of shard partitions did: each shard (`shard`, `count`, `reused`), the images
    scored, how many of them the judge gives their prompt's class, and the judge's digest."""

    judge_digest: str
    written: list[dict[str, Any]] = field(default_factory=list)
    n_images: int = 0
    agree: int = 0


def score_shards(store: Artifacts, keys: list[str], device: Any, batch_size: int,
                 log: Log) -> ShardScoring:
    """Score the synthetic shards `keys` with the store's judge, each published on its own."""
    judge_dir = store.require("judge")
    done = ShardScoring(judge_info(judge_dir)["digest"])
    model = None
    for key in keys:
        tar_path = store.require("synthetic_shards", f"shard-{key}.tar")
        info = read_shard_info(store.require("synthetic_shards", f"shard-{key}.json"))
        if info is None:
            raise FileNotFoundError(f"shard {key} is not finished: materialize its "
                                    "synthetic_shards partition first")
        name = scores_name(tar_path.name)
        with store.lock(ASSET, key):
            target = store.refresh(ASSET, name)
            if scores_are_current(target, shard_sha256=info.sha256,
                                  judge_digest=done.judge_digest):
                log(f"shard {key}: scores already describe these bytes, kept")
                store.push(ASSET, name)  # a crash may have come before the upload
                done.written.append({"shard": key, "count": info.count, "reused": True})
                continue
            if model is None:  # loaded once per run, and only when a shard needs it
                model = load_judge(judge_dir, device, batch_size)
            scores = score_shard(model, tar_path, clip=isinstance(model, ClipJudge))
            with store.publish_file(ASSET, name) as temp:
                write_scores(temp, scores, shard_sha256=info.sha256,
                             judge_digest=done.judge_digest)
        done.n_images += len(scores.keys)
        done.agree += int(np.sum(scores.probs.argmax(1) == scores.labels))
        done.written.append({"shard": key, "count": len(scores.keys), "reused": False})
    return done
