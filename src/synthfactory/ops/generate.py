"""Turning prompt records into shard samples, streamed batch by batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from synthfactory.ops.ddpm import DdpmGenerator
from synthfactory.ops.prompts import PromptRecord
from synthfactory.ops.shards import Sample


def generate_samples(generator: DdpmGenerator, records: Sequence[PromptRecord], *, batch_size: int,
                     steps: int, scheduler: str) -> Iterator[Sample]:
    """Yield one sample per record, generating `batch_size` at a time (memory stays flat)."""
    sampler = {"scheduler": scheduler, "steps": steps, "eta": 0.0, "batch_size": batch_size}
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        images = generator.sample([r.class_id for r in batch], [r.seed for r in batch],
                                  [r.guidance for r in batch], steps, scheduler)
        for record, image in zip(batch, images, strict=True):
            meta = {"prompt": record.to_json(), "sampler": sampler,
                    "generator_digest": generator.digest}
            yield Sample(key=record.key, image=image, label=record.class_id, meta=meta)
