"""What the throughput benchmarks share: the graph up to the generator, then timed shard runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dagster as dg

from synthfactory.automation import all_shards_tags
from synthfactory.definitions import build_definitions
from synthfactory.ops.data.prompts import PROMPTS_FILE, PromptRecord, read_prompts
from synthfactory.params import ProjectConfig

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class ShardRuns:
    """Definitions of one params file with `real_images`, `prompts` and `generator` materialized."""

    def __init__(self, config: ProjectConfig) -> None:
        self.defs = build_definitions(config)
        self.store_root = Path(config.store.root)
        self.shard_keys = (self.defs.get_assets_def("synthetic_shards").partitions_def
                           .get_partition_keys())
        upstream = dg.materialize(list(self.defs.assets),
                                  selection=["real_images", "prompts", "generator"],
                                  resources=self.defs.resources, run_config=QUIET)
        assert upstream.success

    def records(self) -> list[PromptRecord]:
        """The prompt records the shards are generated from."""
        return read_prompts(self.store_root / "prompts" / PROMPTS_FILE)

    def materialize_shards(self) -> tuple[dg.ExecuteInProcessResult, float]:
        """Every shard partition in one run, from scratch; the result and its wall seconds."""
        # Finished shards from the same inputs are kept on a rerun (crash resume): remove them,
        # or every run after the first would measure nothing.
        shutil.rmtree(self.store_root / "synthetic_shards", ignore_errors=True)
        started = time.perf_counter()
        result = dg.materialize(list(self.defs.assets), selection=["synthetic_shards"],
                                resources=self.defs.resources, run_config=QUIET,
                                tags=all_shards_tags(self.shard_keys))
        assert result.success
        return result, time.perf_counter() - started
