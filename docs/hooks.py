"""MkDocs hooks of the synthfactory site (`hooks:` in mkdocs.yml).

`reference/configuration.md` is not a file in the repository: it is generated from the pydantic
models of params.yaml on every build (`mkdocs build`, `mkdocs serve`, `make docs`), so adding,
renaming or removing a key changes the page and the page can never drift from the code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
GENERATED = "reference/configuration.md"
RENDER = ("import sys; from synthfactory.params.reference import render_reference; "
          "sys.stdout.write(render_reference(params_file=sys.argv[1]))")


def render() -> str:
    """The reference of this checkout's models, rendered in a fresh interpreter.

    A fresh process reads the models as they are now (`mkdocs serve` rebuilds after an edit of
    src/synthfactory/params, which mkdocs.yml watches), and from this checkout's src/, not from
    whatever synthfactory the interpreter has installed.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", RENDER, str(ROOT / "params.yaml")], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PluginError(f"rendering {GENERATED} failed:\n{done.stderr}")
    return done.stdout


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the configuration reference, generated now, to the site's pages."""
    if (existing := files.get_file_from_path(GENERATED)) is not None:
        files.remove(existing)
    files.append(File.generated(config, GENERATED, content=render()))
    return files
