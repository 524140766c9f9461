"""The configuration reference: every key of `params.yaml`, rendered as Markdown from the models.

The documentation site's page `reference/configuration.md` is this module's output (the MkDocs
hook `docs/hooks.py` calls `render_reference` on every build), so a key added to, renamed in or
removed from a model changes the page without anyone editing it.

Per top-level key of `params.yaml` one section, per pydantic model one table: key, type, default
and a description. The description is the field's `description` when it has one, else the
comment written beside or directly above the field in the model's source, else the comment beside
the key in the shipped `params.yaml`; where that file sets another value than the model's default,
the description says so.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import textwrap
import tokenize
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from synthfactory.params.platform import AutomationParams, ExecutorParams
from synthfactory.params.project import Params
# params.project imports these three already (ProjectConfig holds them): nothing new is loaded.
from synthfactory.resources.dvc import DvcResource
from synthfactory.resources.runtime import TorchRuntime
from synthfactory.resources.store import ArtifactStore

TITLE = "Configuration reference"
# What each top-level key configures, in the order the shipped params.yaml lists them.
TOP_LEVEL_ROLE = {
    "seed": "every random choice derives its seed from this one",
    "replicates": "independent draws of everything random downstream of the generator's "
                  "weights: r0 is the graph, r1 … copies `r1/<asset>` of prompts, "
                  "synthetic_shards, shard_scores, filtered_set and the classifiers trained "
                  "on them, under `<store root>/r1/` (1: no copies; the pydantic default)",
    "store": "the artifact store resource (`ArtifactStore`)",
    "runtime": "the torch runtime resource (`TorchRuntime`); its seed is the top-level `seed`",
    "dvc": "the DVC resource (`DvcResource`); no stage reads it",
    "automation": "the rebuild schedule, the params sensor and eager automation",
    "executor": "which Dagster executor runs the steps of a run",
}
# Comments from this column on, alone on their line, continue the comment beside a key above.
COMMENT_COLUMN = 20
# Fields of a model that are not keys of params.yaml under that section.
NOT_KEYS = {("runtime", "seed")}


def top_level_sections() -> dict[str, Any]:
    """The top level of params.yaml: key → annotation (a model, or `int` for `seed` and
    `replicates`).

    The asset sections are the fields of `Params`; around them the resources and the platform.
    """
    return {"seed": int, "replicates": int, "store": ArtifactStore, "runtime": TorchRuntime,
            "dvc": DvcResource,
            **{name: field.annotation for name, field in Params.model_fields.items()},
            "automation": AutomationParams, "executor": ExecutorParams}


def models_of(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X`, `X | None`, `dict[str, X]`, …)."""
    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else []
    for argument in typing.get_args(annotation):
        found += [model for model in models_of(argument) if model not in found]
    return found


def type_name(annotation: Any) -> str:
    """A reader's spelling of a type: `int | None`, `"ddpm" | "diffusers"`, `list[float]`."""
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(value) for value in typing.get_args(annotation))
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return " | ".join(type_name(argument) for argument in typing.get_args(annotation))
    if origin is not None:
        arguments = ", ".join(type_name(argument) for argument in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{arguments}]"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()
    return PydanticUndefined


def _shown(value: Any) -> str:
    """A value as params.yaml spells it (JSON flow style; a model as its non-empty mapping)."""
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return json.dumps(value, default=str)


def _source_comments(model: type[BaseModel]) -> dict[str, str]:
    """field → the comment beside its line or on the lines directly above it, in the body of the
    class that declares it (the model or a base)."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            found.update({name: text for name, text in _class_comments(cls).items() if text})
    return found


@cache
def _class_comments(model: type[BaseModel]) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    comments = {token.start[0]: token.string.lstrip("#").strip() for token in tokens
                if token.type == tokenize.COMMENT}
    lines = source.splitlines()
    found: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        match = re.match(r"^    ([a-z_][a-z_0-9]*)\s*:", line)
        if not match or match.group(1) not in model.model_fields:
            continue
        above, previous = [], number - 1
        while previous in comments and lines[previous - 1].lstrip().startswith("#"):
            above.insert(0, comments[previous])
            previous -= 1
        beside = [comments[number]] if number in comments else []
        found[match.group(1)] = " ".join(above + beside)
    return found


def params_file_comments(path: Path) -> dict[str, str]:
    """Dotted key → what the comments of a params file say about it.

    A key's comment is the block of whole-line comments right above it (at the key's
    indentation) and the comment beside it. A comment that continues the one above it (beside a
    key or alone in the comment column, written `#   ...`) belongs to the key that comment began
    at, as the shipped params.yaml writes a long comment across the next keys' lines.
    """
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    last: str | None = None  # the key whose comment a continuation extends

    def extend(key: str | None, text: str) -> None:
        if key is not None and text:
            found[key] = f"{found.get(key, '')} {text}".strip()

    for line in path.read_text().splitlines():
        alone = re.match(r"^( *)#(.*)$", line)
        if alone is not None:
            text = alone.group(2).strip()
            if len(alone.group(1)) >= COMMENT_COLUMN:
                extend(last, text)
            else:
                block.append(text)
            continue
        key = re.match(r"^( *)([a-z_][a-z_0-9]*):(.*)$", line)
        if key is None:
            block, last = [], None
            continue
        indent, name, rest = len(key.group(1)), key.group(2), key.group(3)
        stack = [(depth, part) for depth, part in stack if depth < indent]
        dotted = ".".join([part for _, part in stack] + [name])
        stack.append((indent, name))
        extend(dotted, " ".join(block))
        block = []
        comment = re.search(r"#( *)(.*)$", rest)
        if comment is None:
            last = dotted if dotted in found else None
        elif len(comment.group(1)) >= 2 and last is not None:  # `#   ...`: a continuation
            extend(last, comment.group(2).strip())
        else:
            extend(dotted, comment.group(2).strip())
            last = dotted
    return found


def _lookup(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return PydanticUndefined
        values = values[part]
    return values


def cell(text: str) -> str:
    """Text safe in a Markdown table cell: outside code spans, pipes escaped and `<…>` shown
    (Python-Markdown's tables keep a pipe inside a code span in its cell)."""
    parts = text.replace("\n", " ").split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return "`".join(parts)


def _description(model: type[BaseModel], name: str, dotted: str,
                 comments: Mapping[str, str]) -> str:
    field = model.model_fields[name]
    return field.description or _source_comments(model).get(name) or comments.get(dotted, "")


def _doc(model: type[BaseModel]) -> str:
    """The model's docstring, unless it is pydantic's or Dagster's inherited one."""
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


def _model_tables(dotted: str, model: type[BaseModel], shipped: Any,
                  comments: Mapping[str, str], level: int) -> list[str]:
    lines = [f"{'#' * level} `{dotted}`", ""]
    if doc := _doc(model):
        lines += [doc, ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if (dotted, name) in NOT_KEYS:
            continue
        key = f"{dotted}.{name}"
        description = _description(model, name, key, comments)
        default = _default(field)
        value = _lookup(shipped, key)
        if value is not PydanticUndefined and not isinstance(value, dict) \
                and value != (default.model_dump() if isinstance(default, BaseModel) else default):
            description = f"{description} (shipped `params.yaml`: `{json.dumps(value)}`)".strip()
        for sub in models_of(field.annotation):
            nested.append((key if len(models_of(field.annotation)) == 1
                           else f"{key} ({sub.__name__})", sub))
        lines.append(f"| `{name}` | {cell(f'`{type_name(field.annotation)}`')} | "
                     f"{cell(f'`{_shown(default)}`')} | {cell(description)} |")
    lines.append("")
    for key, sub in nested:
        lines += _model_tables(key, sub, shipped, comments, min(level + 1, 6))
    return lines


def render_reference(sections: Mapping[str, Any] | None = None,
                     params_file: str | Path | None = None) -> str:
    """The configuration reference as Markdown.

    `sections` maps each top-level key to its annotation (default: `top_level_sections()`);
    `params_file` (e.g. the shipped params.yaml) adds its comments and its values where they
    differ from the models' defaults.
    """
    sections = top_level_sections() if sections is None else sections
    shipped: dict[str, Any] = {}
    comments: dict[str, str] = {}
    if params_file is not None and Path(params_file).is_file():
        shipped = yaml.safe_load(Path(params_file).read_text()) or {}
        comments = params_file_comments(Path(params_file))
    lines = [f"# {TITLE}", "",
             "Generated from the pydantic models of `params.yaml` (`synthfactory.params.reference`)"
             " on every build of this site: a key added to a model appears here without an edit.",
             "Unknown keys are errors; a value the shipped `params.yaml` sets differently from the",
             "model's default is named beside the description.", "",
             "| key | what it configures |", "|---|---|"]
    for key, annotation in sections.items():
        role = TOP_LEVEL_ROLE.get(key) or next(
            (" ".join(doc.split("\n\n")[0].split()) for model in models_of(annotation)
             if (doc := _doc(model))), "")
        lines.append(f"| [`{key}`](#{key}) | {cell(role)} |")
    lines.append("")
    for key, annotation in sections.items():
        models = models_of(annotation)
        if not models:
            value = _lookup(shipped, key)
            lines += [f"## `{key}`", "", f"Type `{type_name(annotation)}`"
                      + (f", shipped `params.yaml`: `{json.dumps(value)}`"
                         if value is not PydanticUndefined else "")
                      + f". {TOP_LEVEL_ROLE.get(key, comments.get(key, ''))}".rstrip(". ") + ".",
                      ""]
            continue
        for model in models:
            lines += _model_tables(key, model, shipped, comments, level=2)
    return "\n".join(lines).rstrip() + "\n"
