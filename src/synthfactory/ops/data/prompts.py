"""Prompt records: one per image to generate, with everything needed to regenerate it exactly."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from synthfactory.ops.seeds import derive_seed, rng

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


STRATEGIES = ("class_name", "templates", "hypernym_background")
CONTEXT_TEMPLATE = "{name}, {hypernym} inside {background}"
# Guidance drawn from a range is rounded to this grid so that images sharing a scale can be
# generated in one batch (a pipeline call takes one guidance scale).
GUIDANCE_GRID = 0.25
BUNDLED_TABLES = ("cifar10", "cifar100")


@dataclass(frozen=True)
class ClassContext:
    """What the `hypernym_background` strategy says about a class."""

    hypernym: str
    backgrounds: tuple[str, ...]


def expand_prompts(class_names: Sequence[str], images_per_class: int, templates: Sequence[str],
                   guidance: Sequence[float], negative_prompt: str, global_seed: int, *,
                   strategy: str = "templates", context: dict[str, ClassContext] | None = None,
                   display_names: dict[str, str] | None = None,
                   guidance_range: Sequence[float] | None = None) -> list[PromptRecord]:
    """`images_per_class` records per class, classes interleaved so every shard is balanced.

    The text of the i-th image of a class follows `strategy`: `class_name` (the name alone),
    `templates` (template `i mod len(templates)`), or `hypernym_background` ("<name>, <hypernym>
    inside <background>", background `i mod len(backgrounds)` of the class's `context`). The name
    in the text is `display_names[class]`, else the class name with underscores as spaces.
    Guidance is `guidance[i mod len(guidance)]`, or with `guidance_range` a seeded uniform draw
    per image on a 0.25 grid. The seed derives from (global seed, "synthetic_shards", index),
    so one image can be regenerated alone.
    """
    if images_per_class <= 0:
        raise ValueError(f"prompts.images_per_class = {images_per_class}: must be at least 1")
    if strategy not in STRATEGIES:
        raise ValueError(f"prompts.strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    check_class_names(class_names)
    display_names = display_names or {}
    if strategy == "hypernym_background":
        missing = [name for name in class_names if name not in (context or {})]
        if missing:
            raise ValueError(f"prompts.context_table has no entry for classes {missing[:5]}"
                             f"{' …' if len(missing) > 5 else ''}: add them to the table")
    records = []
    for position in range(images_per_class):
        for class_id, name in enumerate(class_names):
            index = len(records)
            shown = display_name(name, display_names)
            if strategy == "class_name":
                template = "{name}"
                text = shown
            elif strategy == "templates":
                template = templates[position % len(templates)]
                text = template.format(name=shown)
            else:
                entry = (context or {})[name]
                template = CONTEXT_TEMPLATE
                text = CONTEXT_TEMPLATE.format(
                    name=shown, hypernym=entry.hypernym,
                    background=entry.backgrounds[position % len(entry.backgrounds)])
            if guidance_range is None:
                scale = float(guidance[position % len(guidance)])
            else:
                low, high = guidance_range
                drawn = rng(global_seed, "prompts", "guidance", index).uniform(low, high)
                scale = min(max(round(drawn / GUIDANCE_GRID) * GUIDANCE_GRID, low), high)
            records.append(PromptRecord(
                index=index, key=f"s{index:07d}", class_id=class_id, class_name=name,
                template=template, text=text, negative_text=negative_prompt,
                seed=derive_seed(global_seed, "synthetic_shards", index), guidance=scale))
    return records


def display_name(name: str, display_names: dict[str, str] | None = None) -> str:
    """The name a class has in text: its `display_names` entry, else underscores as spaces."""
    return (display_names or {}).get(name, name.replace("_", " "))


def load_context_table(table: str) -> dict[str, ClassContext]:
    """A context table: `cifar10`/`cifar100` (shipped) or a YAML file of the same format.

    The format is `groups: {<group>: {hypernym: str, backgrounds: [str, ...], classes: [...]}}`.
    """
    if table in BUNDLED_TABLES:
        text = (resources.files("synthfactory.ops.data") / "prompt_tables" / f"{table}.yaml").read_text()
    else:
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"prompts.context_table {table!r} is neither a shipped table "
                                    f"({', '.join(BUNDLED_TABLES)}) nor a file")
        text = path.read_text()
    raw = yaml.safe_load(text) or {}
    groups = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"prompts.context_table {table!r} has no 'groups' mapping: expected "
                         "groups: {<group>: {hypernym, backgrounds, classes}}")
    context: dict[str, ClassContext] = {}
    for group, entry in groups.items():
        if (not isinstance(entry, dict) or not entry.get("hypernym")
                or not entry.get("backgrounds") or not entry.get("classes")):
            raise ValueError(f"prompts.context_table {table!r}: group {group!r} needs a hypernym, "
                             "a non-empty backgrounds list and a non-empty classes list")
        for name in entry["classes"]:
            context[str(name)] = ClassContext(str(entry["hypernym"]),
                                              tuple(str(b) for b in entry["backgrounds"]))
    return context


def load_display_names(path: str) -> dict[str, str]:
    """Class name → name used in prompts, from a JSON object or a synset text file.

    The text format is ImageNet's `LOC_synset_mapping.txt`: one `<class> <name>, <other names>`
    per line; the first name is used.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompts.display_names {path!r} is not a file: give a JSON "
                                "object or lines '<class> <name>, <other names>'")
    text = file.read_text()
    if file.suffix == ".json":
        names = json.loads(text)
        if not isinstance(names, dict):
            raise ValueError(f"prompts.display_names {path!r} must hold a JSON object "
                             "{class: name}")
        return {str(key): str(value) for key, value in names.items()}
    names = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        if not rest.strip():
            raise ValueError(f"prompts.display_names {path!r} line {number}: {line!r} has no "
                             "name after the class")
        names[key] = rest.split(",")[0].strip()
    return names


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
