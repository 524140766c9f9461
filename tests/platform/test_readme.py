"""The text's references stay true: every params key it names exists, every repository file
and make target it names is there, every link has its page and heading.

The text is the README and every page of the manual (`docs/**/*.md`, and the configuration
reference that `docs/hooks.py` generates). A renamed key, a moved test file or a dropped target
makes a page lie to its reader; this test fails instead (the planted-offender tests show it
failing on each kind of broken reference). The README stays a front door: at most 300 lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synthfactory.params.reference import render_reference, top_level_sections
from tests.support import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
README_MAX_LINES = 300
DOCS = PROJECT_ROOT / "docs"
# Pages of the manual that are generated on every build, not files (see docs/hooks.py).
GENERATED = {"reference/configuration.md"}
PAGES = sorted(path.relative_to(PROJECT_ROOT).as_posix() for path in DOCS.rglob("*.md"))
# The top level of params.yaml: the resources, the asset sections, the platform (the same
# enumeration the configuration reference renders).
TOP_LEVEL: dict[str, Any] = top_level_sections()
# Paths the README names relative to the repository root, and relative to src/synthfactory/.
REPOSITORY_ROOTS = {"src", "tests", "benchmarks", "configs", "deploy", "docs", "dagster_home",
                    ".dvc", ".ci", "Makefile", "params.yaml", "dvc.yaml", "pyproject.toml",
                    "README.md"}
PACKAGE_ROOTS = {"ops", "assets", "resources", "params"}
PACKAGE = PROJECT_ROOT / "src" / "synthfactory"

CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOTTED_KEY = re.compile(r"^([a-z_]+(?:\.[a-z_0-9]+)+)(?:\s*[:=].*)?$")
SECTION_MAPPING = re.compile(r"^([a-z_]+(?:\.[a-z_0-9]+)*): \{(.*)\}$")
FILE_LIKE = re.compile(r"^[\w.-]+(?:/[\w.-]*)*$")
# `generator.json` is a file, not the key `json` of the `generator` section.
FILE_SUFFIXES = {"json", "jsonl", "yaml", "yml", "lock", "tar", "png", "py", "md", "toml", "txt",
                 "safetensors", "html", "csv"}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X`, `X | None`, …)."""
    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else []
    for argument in typing.get_args(annotation):
        found += _models(argument)
    return found


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return origin is dict or any(_is_mapping(a) for a in typing.get_args(annotation))


def key_problem(dotted: str) -> str | None:
    """None when `a.b.c` is a key of params.yaml, else what is wrong with it."""
    first, *rest = dotted.split(".")
    if first not in TOP_LEVEL:
        return f"{dotted}: no section {first!r}"
    annotation = TOP_LEVEL[first]
    for depth, part in enumerate(rest):
        if _is_mapping(annotation) and not _models(annotation):
            return None  # a free mapping (accuracy_floor, storage_options, executor.k8s)
        models = _models(annotation)
        fields = {name for model in models for name in model.model_fields}
        if part not in fields:
            return f"{dotted}: {'.'.join([first, *rest[:depth]])} has no key {part!r}"
        annotation = next(model.model_fields[part].annotation for model in models
                          if part in model.model_fields)
    return None


def _top_level_keys(mapping: str) -> list[str]:
    """`device: auto|cpu, dtype, threads` → ['device', 'dtype', 'threads'] (depth 0 only)."""
    keys, depth, current = [], 0, ""
    for char in mapping + ",":
        depth += char in "{[" and 1 or 0
        depth -= char in "}]" and 1 or 0
        if char == "," and depth == 0:
            keys.append(current.split(":")[0].strip())
            current = ""
        else:
            current += char
    return [key for key in keys if key]


def _prose_and_code(text: str) -> tuple[str, list[str]]:
    """The README without its fenced blocks, and the lines of those blocks."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return "\n".join(prose), code


def _ignored(path: Path) -> bool:
    """Whether git ignores the path (a file each clone makes for itself, e.g. .dvc/config.local)."""
    done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=PROJECT_ROOT,
                          capture_output=True)
    return done.returncode == 0


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading (the README's)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _toc_slug(heading: str) -> str:
    """MkDocs' anchor of a heading (Python-Markdown's toc: runs of spaces and dashes → one)."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


def _anchors(text: str, slug: Any) -> set[str]:
    prose, _ = _prose_and_code(text)
    return {slug(line.lstrip("#")) for line in prose.splitlines() if re.match(r"#+ ", line)}


def _page_text(page: str, root: Path) -> str | None:
    """The text of a page of the manual (a docs/-relative path), generated ones included."""
    if page in GENERATED:
        return render_reference(params_file=root / "params.yaml")
    path = root / "docs" / page
    return path.read_text() if path.is_file() else None


def readme_problems(text: str, root: Path = PROJECT_ROOT, page: str = "README.md") -> list[str]:
    """Every reference of a README (or manual page, `page` = `docs/...`) that no longer holds."""
    prose, code_lines = _prose_and_code(text)
    spans = CODE_SPAN.findall(prose)
    problems = []
    for match in CODE_SPAN.finditer(prose):
        span = match.group(1).strip()
        if "metrics.json" in prose[match.end():match.end() + 20]:
            continue  # the shape of a metrics.json entry (`refinement: {...}` to `metrics.json`)
        if mapping := SECTION_MAPPING.match(span):
            base = mapping.group(1)
            if base.split(".")[0] in TOP_LEVEL:
                problems += [problem for key in _top_level_keys(mapping.group(2))
                             if (problem := key_problem(f"{base}.{key}"))]
                continue
        if ((dotted := DOTTED_KEY.match(span)) and dotted.group(1).split(".")[0] in TOP_LEVEL
                and dotted.group(1).rsplit(".", 1)[1] not in FILE_SUFFIXES):
            if problem := key_problem(dotted.group(1)):
                problems.append(problem)
            continue
        if FILE_LIKE.match(span) and "/" in span or span in REPOSITORY_ROOTS:
            first = span.split("/")[0]
            base = root if first in REPOSITORY_ROOTS else (
                root / PACKAGE.relative_to(PROJECT_ROOT) if first in PACKAGE_ROOTS else None)
            if base is not None and not (base / span).exists() and not _ignored(base / span):
                problems.append(f"{span}: no such file or directory")
        elif re.fullmatch(r"test_\w+\.py", span) and not list((root / "tests").rglob(span)):
            problems.append(f"{span}: no such test file under tests/")
    makefile = (root / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.MULTILINE))
    commands = [span for span in spans if span.startswith("make ")]
    commands += [line.strip() for line in code_lines if line.strip().startswith("make ")]
    for command in commands:
        target = command.split()[1]
        if "=" not in target and target not in targets:
            problems.append(f"`make {target}`: the Makefile has no target {target!r}")
    in_docs = page.startswith("docs/")
    slug = _toc_slug if in_docs else _slug
    here = Path(page).parent
    for link in LINK.findall(prose):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = link.partition("#")
        target = Path(os.path.normpath(here / path)).as_posix() if path else page
        in_manual = target.startswith("docs/")
        manual_page = target.removeprefix("docs/")
        if path and not (root / target).exists() and not (in_manual and manual_page in GENERATED):
            problems.append(f"link ({link}): no such file")
            continue
        if not anchor:
            continue
        if not path:
            anchors = _anchors(text, slug)
        elif target.endswith(".md") and in_manual:
            anchors = _anchors(_page_text(manual_page, root) or "", _toc_slug)
        elif target.endswith(".md"):
            anchors = _anchors((root / target).read_text(), _slug)
        else:
            continue
        if anchor not in anchors:
            problems.append(f"link ({link}): no heading with that anchor")
    return problems


def test_every_reference_in_the_readme_holds() -> None:
    assert readme_problems(README.read_text()) == []


@pytest.mark.parametrize("page", [*PAGES, *(f"docs/{page}" for page in sorted(GENERATED))])
def test_every_reference_in_the_manual_holds(page: str) -> None:
    text = _page_text(page.removeprefix("docs/"), PROJECT_ROOT)
    assert text is not None, f"{page}: no such page"
    assert readme_problems(text, page=page) == []


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, over {README_MAX_LINES}: it is the front door (what it "
        "is, the two commands, the graph, the headline numbers, where to read on); move the rest "
        "to a page of docs/")


def test_the_check_follows_links_between_pages() -> None:
    page = "docs/operating.md"
    broken = "\n".join([
        "# A page", "",
        "Read [the results](results.md), [the reference](reference/configuration.md#generator),",
        "[a moved page](scale.md), [a lost heading](distillation.md#no-such-heading),",
        "[a key not in the reference](reference/configuration.md#no_such_key),",
        "[this page](#a-page), [nowhere here](#nowhere) and [the README](../README.md#read-on).",
    ])
    assert readme_problems(broken, page=page) == [
        "link (scale.md): no such file",
        "link (distillation.md#no-such-heading): no heading with that anchor",
        "link (reference/configuration.md#no_such_key): no heading with that anchor",
        "link (#nowhere): no heading with that anchor",
    ]


def test_the_check_fails_on_each_kind_of_broken_reference() -> None:
    broken = README.read_text() + "\n".join([
        "",
        "See `tests/test_assets_graph.py` and `test_ops_filters.py` (their names before the",
        "layout), set `filtered_set.dedup_treshold` or `runtime: {device: cpu, thread: 1}`,",
        "edit [`configs/missing.yaml`](configs/missing.yaml), read [this](#no-such-heading),",
        "and run `make bench-tpu`.",
    ])
    problems = readme_problems(broken)
    assert problems == [
        "tests/test_assets_graph.py: no such file or directory",
        "test_ops_filters.py: no such test file under tests/",
        "filtered_set.dedup_treshold: filtered_set has no key 'dedup_treshold'",
        "runtime.thread: runtime has no key 'thread'",
        "configs/missing.yaml: no such file or directory",
        "`make bench-tpu`: the Makefile has no target 'bench-tpu'",
        "link (configs/missing.yaml): no such file",
        "link (#no-such-heading): no heading with that anchor",
    ]
    # Keys and paths that do exist pass, nested ones included.
    assert key_problem("generator.ddpm.checkpoint_every") is None
    assert key_problem("eval_report.accuracy_floor.real") is None
    assert key_problem("automation.schedule.cron") is None
