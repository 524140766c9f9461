"""The house rules of the source tree, checked on every module (imports inside functions too).

- `ops/` holds the computations: it never imports dagster, the resources, the assets, the
  params or the code location; it is read by them, never the other way round.
- Each stage of `ops/` imports only the stages before it in the asset graph's order:
  storage → data → generation → training → curation → distillation → evaluation → refinement
  → report (plus the shared helpers at the top of ops/). `ops/storage` imports no other stage at all.
- An asset module does not reach into another asset module's private helpers (`_name`).
- No module in src/ is over 450 lines, and at most 4 Python files sit directly in ops/.
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


SOURCES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_module_follows_the_import_rules(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_module_is_at_most_450_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it along what it holds"


def test_ops_top_level_holds_only_shared_helpers() -> None:
    top = sorted(p.name for p in OPS.glob("*.py"))
    assert len(top) <= MAX_OPS_TOP_FILES, top
    assert sorted(p.name for p in OPS.iterdir() if p.is_dir() and p.name != "__pycache__") == \
        sorted(STAGE_ORDER)


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
