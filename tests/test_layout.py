"""The house rules of the source tree, checked on every module (imports inside functions too).

- `ops/` holds the computations: it never imports dagster, the resources, the assets, the
  params or the code location; it is read by them, never the other way round.
- Each stage of `ops/` imports only the stages before it in the asset graph's order:
  storage → data → generation → training → curation → distillation → evaluation → refinement
  → report (plus the shared helpers at the top of ops/). The report reads what every stage
  measured; the weak-class loop reads the evaluation's arms but never the report.
  `ops/storage` imports no other stage at all.
- An asset module does not reach into another asset module's private helpers (`_name`).
- No module in src/ is over 450 lines, and at most 4 Python files sit directly in ops/.
- No import cycle among the project's modules, counting imports inside functions: a cycle is
  hidden by a function-level import, not removed by it.
- A project module imported inside a function says why on its line, or on the line above its
  block of imports: `# deferred: <reason>` (torch, diffusers, transformers or matplotlib kept
  out of the code location's load; the CLI's `--help` kept instant).
- In assets/, an asset module (one that defines an asset or check) is imported by no module of
  assets/: the pieces assets share live in modules that define none.
- No asset or check function is longer than 40 lines, from its `def` to the end of its body
  (the decorator does not count), builder-made ones included: an asset resolves its inputs,
  calls one function of ops/, publishes and returns metadata.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

SRC = PROJECT_ROOT / "src" / "synthfactory"
OPS = SRC / "ops"
STAGE_ORDER = ["storage", "data", "generation", "training", "curation", "distillation",
               "evaluation", "refinement", "report"]
# Modules at the top of ops/: shared by every stage (checks read what several stages wrote).
OPS_TOP = {"synthfactory.ops", "synthfactory.ops.seeds", "synthfactory.ops.tensors",
           "synthfactory.ops.checks"}
FORBIDDEN_IN_OPS = ("dagster", "dagster_k8s", "synthfactory.resources", "synthfactory.assets",
                    "synthfactory.params", "synthfactory.definitions", "synthfactory.automation",
                    "synthfactory.executors", "synthfactory.cli", "synthfactory.console",
                    "synthfactory.dvc_stages")
MAX_LINES = 450
MAX_OPS_TOP_FILES = 4
MAX_ASSET_FUNCTION_LINES = 40
DEFERRED = "# deferred:"  # the marker of a function-level import of a project module
ASSET_DECORATORS = {"asset", "multi_asset", "asset_check", "multi_asset_check"}


def module_name(path: Path, package: Path = SRC) -> str:
    """`<package>/ops/data/prompts.py` → `synthfactory.ops.data.prompts`."""
    parts = ("synthfactory", *path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in a file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def stage_of(module: str) -> str | None:
    """The ops stage a module belongs to (`synthfactory.ops.data.x` → `data`), else None."""
    parts = module.split(".")
    if parts[:2] == ["synthfactory", "ops"] and len(parts) > 2 and parts[2] in STAGE_ORDER:
        return parts[2]
    return None


def violations(path: Path, package: Path = SRC) -> list[str]:
    """What one file of the package directory `package` breaks of the rules above."""
    name = module_name(path, package)
    where = path.relative_to(package.parent).as_posix()
    problems = []
    own_stage = stage_of(name)
    for module, names, line in imports(path):
        targets = [module] + [f"{module}.{imported}" for imported in names]
        if name.startswith("synthfactory.ops"):
            if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN_IN_OPS):
                problems.append(f"{where}:{line} imports {module} (ops stays below Dagster)")
            target_stages = {stage_of(target) for target in targets} - {None}
            if own_stage == "storage" and target_stages - {"storage"}:
                problems.append(f"{where}:{line} imports {module}: ops/storage imports no stage")
            elif own_stage is not None:
                later = [stage for stage in target_stages
                         if STAGE_ORDER.index(stage) > STAGE_ORDER.index(own_stage)]
                if later:
                    problems.append(f"{where}:{line} imports {module}: stage {own_stage} may not "
                                    f"import the later stage {later[0]}")
            elif name in OPS_TOP and name != "synthfactory.ops.checks" and target_stages:
                problems.append(f"{where}:{line} imports {module}: the shared helpers at the "
                                "top of ops/ import no stage")
        if name.startswith("synthfactory.assets") and module.startswith("synthfactory.assets."):
            private = [imported for imported in names if imported.startswith("_")]
            if module != name and private:
                problems.append(f"{where}:{line} imports the private {private} of {module}")
    return problems


def too_long(path: Path, package: Path = SRC) -> list[str]:
    """The file, when it is over MAX_LINES lines."""
    lines = len(path.read_text().splitlines())
    if lines <= MAX_LINES:
        return []
    return [f"{path.relative_to(package.parent).as_posix()} has {lines} lines (at most "
            f"{MAX_LINES}): split it along what it holds"]


def import_graph(package: Path = SRC) -> dict[str, set[str]]:
    """module → the project modules it imports anywhere in its file (functions and
    TYPE_CHECKING blocks included); `from a import b` counts `a.b` when that is a module."""
    paths = sorted(package.rglob("*.py"))
    known = {module_name(path, package) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        targets = set()
        for module, names, _ in imports(path):
            candidates = [module, *(f"{module}.{name}" for name in names)]
            targets |= {candidate for candidate in candidates if candidate in known}
        graph[module_name(path, package)] = targets - {module_name(path, package)}
    return graph


def import_cycles(package: Path = SRC) -> list[list[str]]:
    """Each cycle of the import graph, one per strongly connected component, as the module path
    `[a, b, ..., a]` of one cycle through its first module (Tarjan's algorithm)."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(component, graph) for component in components]


def _cycle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth first)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start,
                                                                                        start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{component} is not a cycle")


def cycle_violations(path: Path, package: Path = SRC,
                     cycles: list[list[str]] | None = None) -> list[str]:
    """The import cycles that run through this file's module."""
    name = module_name(path, package)
    found = import_cycles(package) if cycles is None else cycles
    return ["import cycle: " + " → ".join(cycle) for cycle in found if name in cycle]


def _function_imports(tree: ast.AST) -> set[int]:
    """ids of the import statements that sit inside a function."""
    inside: set[int] = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(node) for node in ast.walk(function)
                       if isinstance(node, ast.Import | ast.ImportFrom)}
    return inside


def _is_project_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "synthfactory"
    return any(alias.name.split(".")[0] == "synthfactory" for alias in node.names)


def deferral_violations(path: Path, package: Path = SRC) -> list[str]:
    """Function-level imports of project modules without `# deferred: <reason>` on their own
    line(s) or above them in their block (the imports, comments and blank lines right above)."""
    text = path.read_text()
    lines, tree = text.splitlines(), ast.parse(text)
    inside = _function_imports(tree)
    import_lines = {number for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom)
                    for number in range(node.lineno, node.end_lineno + 1)}
    where = path.relative_to(package.parent).as_posix()
    problems = []
    for node in ast.walk(tree):
        if id(node) not in inside or not _is_project_import(node):
            continue
        block = lines[node.lineno - 1:node.end_lineno]
        number = node.lineno - 1  # walk up through the block: imports, comments, blank lines
        while number >= 1 and (number in import_lines
                               or lines[number - 1].strip().startswith("#")
                               or not lines[number - 1].strip()):
            block.append(lines[number - 1])
            number -= 1
        if not any(_marks(line) for line in block):
            problems.append(f"{where}:{node.lineno} imports a project module inside a function "
                            f"without '{DEFERRED} <reason>': import it at the top, or say what "
                            "the deferral keeps out")
    return problems


def _marks(line: str) -> bool:
    """A deferral marker with a reason after it."""
    marker = line.find(DEFERRED)
    return marker >= 0 and line[marker + len(DEFERRED):].strip() != ""


def _decorator_name(decorator: ast.expr) -> str | None:
    """`dg.asset(...)`, `asset`, `dagster.multi_asset` → the decorator's last name."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else None


def asset_functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The functions of a file decorated as an asset or a check, nested ones included."""
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and any(_decorator_name(d) in ASSET_DECORATORS for d in node.decorator_list)]


def asset_function_violations(path: Path, package: Path = SRC) -> list[str]:
    """Asset and check functions over MAX_ASSET_FUNCTION_LINES lines (`def` to end of body)."""
    where = path.relative_to(package.parent).as_posix()
    problems = []
    for function in asset_functions(path):
        length = function.end_lineno - function.lineno + 1
        if length > MAX_ASSET_FUNCTION_LINES:
            problems.append(f"{where}:{function.lineno} asset function {function.name} has "
                            f"{length} lines (at most {MAX_ASSET_FUNCTION_LINES}): move its "
                            "work into an ops/ function named for what it makes")
    return problems


def asset_import_violations(path: Path, package: Path = SRC) -> list[str]:
    """Imports, by a module of assets/, of an asset module (one that defines an asset/check)."""
    name = module_name(path, package)
    if not name.startswith("synthfactory.assets."):
        return []
    asset_modules = {module_name(other, package) for other in (package / "assets").rglob("*.py")
                     if asset_functions(other)}
    where = path.relative_to(package.parent).as_posix()
    problems = []
    for module, names, line in imports(path):
        for target in [module, *(f"{module}.{imported}" for imported in names)]:
            if target in asset_modules and target != name:
                problems.append(f"{where}:{line} imports the asset module {target}: move what "
                                "both need into a module of assets/ that defines no asset")
    return problems


SOURCES = sorted(SRC.rglob("*.py"))
CYCLES = import_cycles()


def _relative(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_module_follows_the_import_rules(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_module_is_at_most_450_lines(path: Path) -> None:
    assert too_long(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_module_is_on_no_import_cycle(path: Path) -> None:
    assert cycle_violations(path, cycles=CYCLES) == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_function_level_imports_say_why(path: Path) -> None:
    assert deferral_violations(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_no_asset_module_imports_another(path: Path) -> None:
    assert asset_import_violations(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_asset_functions_are_thin(path: Path) -> None:
    assert asset_function_violations(path) == []


def test_ops_top_level_holds_only_shared_helpers() -> None:
    top = sorted(p.name for p in OPS.glob("*.py"))
    assert len(top) <= MAX_OPS_TOP_FILES, top
    assert sorted(p.name for p in OPS.iterdir() if p.is_dir() and p.name != "__pycache__") == \
        sorted(STAGE_ORDER)


ASSET = "import dagster as dg\n\n\n@dg.asset\ndef {name}() -> None:\n    pass\n"


def _long_builder(body_lines: int) -> str:
    """A builder function holding a decorated check of `body_lines` lines after its `def`."""
    body = "".join(f"        x{i} = {i}\n" for i in range(body_lines - 1))
    return ("import dagster as dg\n\n\ndef build() -> dg.AssetChecksDefinition:\n"
            "    @dg.asset_check(asset='a',\n                    name='c')\n"
            f"    def c() -> dg.AssetCheckResult:\n{body}        return None\n    return c\n")


def test_the_rules_catch_what_they_guard(tmp_path: Path) -> None:
    """Each rule fails on a module that breaks it (written into a scratch package)."""
    scratch = tmp_path / "synthfactory"
    cases = {
        "ops/data/bad_dagster.py": ("import dagster as dg\n", "ops stays below Dagster"),
        "ops/storage/bad_stage.py": ("from synthfactory.ops.data.prompts import read_prompts\n",
                                     "ops/storage imports no stage"),
        "ops/data/bad_order.py": ("from synthfactory.ops.evaluation.metrics import accuracy\n",
                                  "may not import the later stage evaluation"),
        "ops/training/bad_package.py": ("from synthfactory.ops.curation import JUDGE_JSON\n",
                                        "may not import the later stage curation"),
        "ops/refinement/bad_report.py": ("from synthfactory.ops.report.blocks import Paragraph\n",
                                         "may not import the later stage report"),
        "ops/seeds.py": ("from synthfactory.ops.data.prompts import read_prompts\n",
                         "the shared helpers at the top of ops/ import no stage"),
        "assets/bad_private.py": ("from synthfactory.assets.data import _counts_table\n",
                                  "imports the private"),
        "ops/data/bad_lazy.py": ("def f():\n    from synthfactory.resources.store import X\n",
                                 "ops stays below Dagster"),
    }
    for relative, (code, expected) in cases.items():
        path = scratch / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        found = violations(path, scratch)
        assert any(expected in problem for problem in found), (relative, found)
    fine = scratch / "ops" / "evaluation" / "fine.py"
    fine.parent.mkdir(parents=True)
    fine.write_text("from synthfactory.ops.data.prompts import read_prompts\n"
                    "from synthfactory.ops.storage.shards import read_samples\n")
    assert violations(fine, scratch) == []
    _plant_the_newer_rules(tmp_path / "newer" / "synthfactory")


def _plant_the_newer_rules(scratch: Path) -> None:
    """Cycles, deferral markers, asset imports, asset function length, module length."""
    files = {
        # a cycle hidden by a function-level import (marked, so only the cycle rule fires)
        "ops/data/ring_a.py": "from synthfactory.ops.data.ring_b import B\nA = 1\n",
        "ops/data/ring_b.py": ("B = 1\n\n\ndef f() -> int:\n    # deferred: a test\n"
                               "    from synthfactory.ops.data.ring_a import A\n\n    return A\n"),
        "ops/data/bare.py": "def f() -> None:\n    from synthfactory.ops.data.ring_b import B\n",
        "ops/data/empty_reason.py": ("def f() -> None:\n    # deferred:\n"
                                     "    from synthfactory.ops.data.ring_b import B\n"),
        "ops/data/marked.py": ("def f() -> None:\n    import math\n\n"
                               "    from synthfactory.ops.data.ring_b import B  # deferred: x\n"),
        "assets/first.py": ASSET.format(name="first"),
        "assets/second.py": "from synthfactory.assets.first import first\n"
                            + ASSET.format(name="second"),
        "assets/shared.py": "def helper() -> None:\n    pass\n",
        "assets/third.py": "from synthfactory.assets.shared import helper\n"
                           + ASSET.format(name="third"),
        "assets/long_check.py": _long_builder(MAX_ASSET_FUNCTION_LINES),
        "assets/short_check.py": _long_builder(MAX_ASSET_FUNCTION_LINES - 1),
        "ops/data/huge.py": "x = 1\n" * (MAX_LINES + 1),
    }
    for relative, code in files.items():
        (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        (scratch / relative).write_text(code)
    at = {relative: scratch / relative for relative in files}
    cycles = import_cycles(scratch)
    assert cycles == [["synthfactory.ops.data.ring_a", "synthfactory.ops.data.ring_b",
                       "synthfactory.ops.data.ring_a"]], cycles
    assert "import cycle: synthfactory.ops.data.ring_a → synthfactory.ops.data.ring_b" in \
        cycle_violations(at["ops/data/ring_b.py"], scratch)[0]
    assert cycle_violations(at["ops/data/bare.py"], scratch) == []
    for relative in ("ops/data/bare.py", "ops/data/empty_reason.py"):
        assert "without '# deferred: <reason>'" in deferral_violations(at[relative], scratch)[0]
    for relative in ("ops/data/ring_b.py", "ops/data/marked.py"):
        assert deferral_violations(at[relative], scratch) == []
    assert "imports the asset module synthfactory.assets.first" in \
        asset_import_violations(at["assets/second.py"], scratch)[0]
    assert asset_import_violations(at["assets/third.py"], scratch) == []
    assert "asset function c has 41 lines" in \
        asset_function_violations(at["assets/long_check.py"], scratch)[0]
    assert asset_function_violations(at["assets/short_check.py"], scratch) == []
    assert f"has {MAX_LINES + 1} lines" in too_long(at["ops/data/huge.py"], scratch)[0]
    assert too_long(at["ops/data/marked.py"], scratch) == []
