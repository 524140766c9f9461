"""Prompt records: one per image to generate, with everything needed to regenerate it exactly."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthfactory.ops.seeds import derive_seed

PROMPTS_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class PromptRecord:
    """One image to generate."""

    index: int
    key: str
    class_id: int
    class_name: str
    template: str
    text: str
    negative_text: str
    seed: int
    guidance: float

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)


def expand_prompts(class_names: Sequence[str], images_per_class: int, templates: Sequence[str],
                   guidance: Sequence[float], negative_prompt: str,
                   global_seed: int) -> list[PromptRecord]:
    """`images_per_class` records per class, classes interleaved so every shard is balanced.

    The i-th image of a class uses template `i mod len(templates)` and guidance
    `i mod len(guidance)`; its seed derives from (global seed, "synthetic_shards", index), so one
    image can be regenerated alone.
    """
    if images_per_class <= 0:
        raise ValueError(f"prompts.images_per_class = {images_per_class}: must be at least 1")
    check_class_names(class_names)
    records = []
    for position in range(images_per_class):
        template = templates[position % len(templates)]
        scale = float(guidance[position % len(guidance)])
        for class_id, name in enumerate(class_names):
            index = len(records)
            records.append(PromptRecord(
                index=index, key=f"s{index:07d}", class_id=class_id, class_name=name,
                template=template, text=template.format(name=name), negative_text=negative_prompt,
                seed=derive_seed(global_seed, "synthetic_shards", index), guidance=scale))
    return records


def check_class_names(class_names: Sequence[str]) -> None:
    """Class names must be non-empty and distinct: they are the labels of every set."""
    if not class_names:
        raise ValueError("the class list is empty")
    for name in class_names:
        if not name.strip():
            raise ValueError(f"class name {name!r} is empty; every class needs a name")
    # Compared in Unicode normal form: 'é' typed and 'é' pasted are different code points that
    # look the same, and would be two labels no one can tell apart in the report.
    normal = [unicodedata.normalize("NFC", name) for name in class_names]
    duplicates = sorted({name for name, key in zip(class_names, normal, strict=True)
                         if normal.count(key) > 1})
    if duplicates:
        raise ValueError(f"class names {duplicates} appear more than once (compared in Unicode "
                         "NFC form); rename them so every class is distinct")


def shard_count(n_records: int, shard_size: int) -> int:
    """How many shards `n_records` records fill (the last one may be short)."""
    return max(1, -(-n_records // shard_size))


def shard_key(shard_index: int) -> str:
    """The partition key of a shard: a zero-padded index (`00000`)."""
    return f"{shard_index:05d}"


def shard_slice(records: Sequence[PromptRecord], key: str, shard_size: int) -> list[PromptRecord]:
    """The records of one shard."""
    start = int(key) * shard_size
    if not 0 <= start < max(len(records), 1):
        raise ValueError(f"shard {key!r} is past the {len(records)} prompt records "
                         f"(shard_size {shard_size}); the prompts changed since partitions loaded")
    return list(records[start:start + shard_size])


def write_prompts(path: Path, records: Sequence[PromptRecord]) -> None:
    """Write records as JSON lines (not atomic by itself: callers publish through the store)."""
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), sort_keys=True) + "\n")


def read_prompts(path: Path) -> list[PromptRecord]:
    """Read records written by `write_prompts`."""
    with open(path) as handle:
        return [PromptRecord(**json.loads(line)) for line in handle if line.strip()]
