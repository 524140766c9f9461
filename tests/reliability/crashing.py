"""Helpers of the crash tests: run the real CLI in a subprocess and SIGKILL it at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from synthfactory.ops.storage.atomic import sha256_file
from tests.support import PROJECT_ROOT

ROOT = PROJECT_ROOT


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    """Write a params file and return its path."""
    path.write_text(yaml.safe_dump(raw))
    return path


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: an ephemeral Dagster instance, our package importable."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `synthfactory ARGS` to completion and return its result (stdout and stderr apart)."""
    return subprocess.run([sys.executable, "-m", "synthfactory.cli", *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)


def kill_cli_when(args: list[str], cwd: Path, condition: Callable[[str], bool],
                  timeout: float = 300) -> str:
    """Run the CLI and SIGKILL it as soon as `condition(output so far)` holds; return the output.

    The condition is checked on every output line and every 5 ms (for conditions on files).
    Fails when the run ends by itself first: then nothing was tested.
    """
    process = subprocess.Popen([sys.executable, "-m", "synthfactory.cli", *args], cwd=cwd,
                               env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not condition("".join(lines)):
            if process.poll() is not None:
                raise AssertionError("the run finished before the kill point:\n" + "".join(lines))
            if time.monotonic() > deadline:
                raise AssertionError("the kill point never came:\n" + "".join(lines))
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    return "".join(lines)


def digests(directory: Path, pattern: str = "*") -> dict[str, str]:
    """sha256 of every file matching `pattern` in a directory (not recursive), by name."""
    return {p.name: sha256_file(p) for p in sorted(directory.glob(pattern)) if p.is_file()}


def finished_looking(directory: Path) -> list[str]:
    """Names in a directory that are not temporaries (`.tmp-*`) nor the writers' leases
    (`.locks`): what a reader would trust."""
    return sorted(p.name for p in directory.iterdir()
                  if not p.name.startswith(".tmp-") and p.name != ".locks")
