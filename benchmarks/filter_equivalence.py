"""The per-shard filter against the whole-set filter on a real graph (prints JSON).

Materializes a params file (default: the shipped `params.yaml`, the embedded default) up to
`filtered_set`, which decides from `shard_scores` alone. Then runs the whole-set filter
(`filters.filter_samples`: every image in memory, the judge over all of them at once, the full
similarity matrix per class) on the same shards and judge, and compares: the kept keys, and
every record. `equal` is the claim.

    python benchmarks/filter_equivalence.py [--params params.yaml] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml


def main() -> None:
    """Materialize up to filtered_set, then compare with the whole-set filter."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workdir", default=None, help="default: a new temporary directory")
    args = parser.parse_args()

    import dagster as dg
    import numpy as np
    import torch

    from synthfactory.automation import all_shards_tags
    from synthfactory.definitions import build_definitions
    from synthfactory.ops.curation import FILTER_MANIFEST
    from synthfactory.ops.curation.filters import FilterSettings, filter_samples
    from synthfactory.ops.curation.judges import load_judge
    from synthfactory.ops.data.real_images import read_classes
    from synthfactory.ops.storage.shards import finished_shards, load_arrays
    from synthfactory.params import parse_params

    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sf-bench-filter-"))
    raw["store"] = {"root": str(workdir / "data")}
    config = parse_params(raw)
    torch.set_num_threads(config.runtime.threads or torch.get_num_threads())
    defs = build_definitions(config)
    keys = defs.get_assets_def("synthetic_shards").partitions_def.get_partition_keys()
    result = dg.materialize(
        list(defs.assets), resources=defs.resources, tags=all_shards_tags(keys),
        selection=["real_images", "prompts", "generator", "synthetic_shards", "judge",
                   "shard_scores", "filtered_set"],
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    assert result.success
    store = workdir / "data"
    per_shard = [json.loads(line) for line in
                 (store / "filtered_set" / FILTER_MANIFEST).read_text().splitlines()]
    images, labels, sample_keys = load_arrays(finished_shards(store / "synthetic_shards"))
    judge = load_judge(store / "judge", torch.device("cpu"))
    settings = FilterSettings(**config.params.filtered_set.model_dump(exclude={"min_pass_rate"}))
    whole, _ = filter_samples(sample_keys, labels, judge.predict_proba(images),
                              judge.embed(images), images, settings,
                              read_classes(store / "real_images"))
    for record in per_shard:
        del record["shard"]
    kept_shard = [r["key"] for r in per_shard if r["keep"]]
    kept_whole = [r["key"] for r in whole if r["keep"]]
    print(json.dumps({
        "benchmark": "filter_equivalence", "params": args.params, "samples": len(whole),
        "kept_per_shard": len(kept_shard), "kept_whole_set": len(kept_whole),
        "same_kept_keys": kept_shard == kept_whole, "same_records": per_shard == whole,
        "rejected_by_reason": {reason: sum(reason in r["reasons"] for r in whole)
                               for reason in sorted({x for r in whole for x in r["reasons"]})},
        "shards": len(keys), "judge_agreement": float(np.mean(
            [r["predicted"] == r["label"] for r in whole]))}, indent=2))


if __name__ == "__main__":
    main()
