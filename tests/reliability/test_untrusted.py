"""Untrusted files: nothing the project loads can execute code, and the web UI is local-only.

The scan reads every Python file of the package, the benchmarks and the tests, so a new
`pickle` import, a `torch.load` without `weights_only=True` or a `from_pretrained` without
`use_safetensors=True` fails the suite wherever it is added.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

ROOT = PROJECT_ROOT
SCANNED = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
                  *(ROOT / "tests").rglob("*.py")])
# Modules that unpickle (or can): importing any of them is a finding.
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                    "marshal"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call whose function is `name` or `<anything>.name`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == name:
                found.append(node)
    return found


def _keyword_is_true(call: ast.Call, keyword: str) -> bool:
    return any(k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def _findings(path: Path) -> list[str]:
    """What in one file could execute code from a loaded file."""
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    where = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [(node.module or "").split(".")[0]]
        else:
            continue
        findings += [f"{where}:{node.lineno}: imports {m}" for m in modules if m in PICKLING_MODULES]
    for call in _calls(tree, "load"):
        func = call.func
        owner = func.value if isinstance(func, ast.Attribute) else None
        if isinstance(owner, ast.Name) and owner.id == "torch" and not _keyword_is_true(
                call, "weights_only"):
            findings.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
    for call in _calls(tree, "from_pretrained"):
        if not _keyword_is_true(call, "use_safetensors"):
            findings.append(f"{where}:{call.lineno}: from_pretrained without use_safetensors=True")
    # numpy can unpickle too: np.load(..., allow_pickle=True).
    for call in _calls(tree, "load"):
        if _keyword_is_true(call, "allow_pickle"):
            findings.append(f"{where}:{call.lineno}: load with allow_pickle=True")
    return findings


def test_the_scan_covers_the_package() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SCANNED}
    assert "src/synthfactory/ops/generation/ddpm.py" in names and "src/synthfactory/cli.py" in names
    assert len(SCANNED) > 30


def test_no_source_file_can_unpickle() -> None:
    findings = [finding for path in SCANNED if path != Path(__file__) for finding in _findings(path)]
    assert findings == []


@pytest.mark.parametrize("snippet, finding", [
    ("import pickle\n", "imports pickle"),
    ("from joblib import load\n", "imports joblib"),
    ("import torch\nstate = torch.load('w.pt')\n", "torch.load without weights_only=True"),
    ("import torch\nstate = torch.load('w.pt', weights_only=False)\n",
     "torch.load without weights_only=True"),
    ("m = UNet2DModel.from_pretrained('d', local_files_only=True)\n",
     "from_pretrained without use_safetensors=True"),
    ("import numpy as np\nx = np.load('a.npy', allow_pickle=True)\n", "allow_pickle=True"),
])
def test_the_scan_finds_what_it_looks_for(tmp_path: Path, snippet: str, finding: str) -> None:
    # The scanner itself is tested on planted code, so a clean result above means something.
    path = tmp_path / "probe.py"
    path.write_text(snippet)
    found = _findings(path)
    assert len(found) == 1 and finding in found[0]


def test_the_scan_accepts_the_safe_forms(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text("import torch\ns = torch.load('w.pt', weights_only=True)\n"
                    "m = UNet2DModel.from_pretrained('d', use_safetensors=True)\n")
    assert _findings(path) == []


def test_the_web_ui_binds_localhost_only() -> None:
    # `make dev` is how the README starts the UI; it must not listen on every interface.
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^dev:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "the Makefile has no dev target"
    command = recipe.group(1)
    assert "dagster dev" in command
    host = re.search(r"(?:-h|--host)[ =](\S+)", command)
    assert host is not None and host.group(1) == "127.0.0.1", command
    assert "0.0.0.0" not in makefile
