"""The `dvc` resource: DVC's command line, called as a subprocess.

DVC lives in its own virtual environment (`.venv-dvc`, made by `make dvc-env`): dvc 3 and
dagster 1.13 need incompatible antlr4 runtimes, so the project never imports dvc and talks to
it only through its command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
from pydantic import ConfigDict, Field

# Where the Makefile installs DVC, relative to the repository root.
PROJECT_DVC = Path(".venv-dvc") / "bin" / "dvc"


class DvcError(RuntimeError):
    """DVC is missing or one of its commands failed; the message says which and what to do."""


class DvcResource(dg.ConfigurableResource):
    """DVC's command line for one repository, and what to do after an asset materializes.

    `executable` is a command on PATH or a path (default `dvc`, else the project's
    `.venv-dvc/bin/dvc`). With `commit: true`, every materialization outside `dvc repro` records
    its output in `dvc.lock` (`dvc commit <stage>`); `push: true` commits and then uploads the
    output to `remote` (the repository's default remote when null). Every call ends within
    `timeout_s` (a hung remote or a stuck repository lock fails the step instead of holding it
    and its pool slot).
    """

    model_config = ConfigDict(extra="forbid")

    executable: str = "dvc"
    repo: str = "."
    commit: bool = False
    push: bool = False
    remote: str | None = None
    # The longest one DVC command may take (s): a push of a large output to a slow remote
    # takes minutes; an hour is a hang.
    timeout_s: float = Field(default=3600.0, gt=0)

    def command(self) -> str:
        """The DVC executable to run, or a `DvcError` that says how to install it."""
        found = shutil.which(self.executable)
        if found:
            return found
        fallback = Path(self.repo) / PROJECT_DVC
        if self.executable == "dvc" and os.access(fallback, os.X_OK):
            return str(fallback.resolve())
        raise DvcError(f"DVC not found: dvc.executable {self.executable!r} is not on PATH"
                       f"{' and ' + str(fallback) + ' does not exist' if self.executable == 'dvc' else ''}"
                       "; run `make dvc-env` (installs dvc==3.* into .venv-dvc) or set "
                       "dvc.executable in params.yaml")

    def run(self, *args: str) -> str:
        """Run `dvc ARGS` in the repository; return its stdout or raise `DvcError` with stderr."""
        command = [self.command(), *args]
        try:
            done = subprocess.run(command, cwd=self.repo, capture_output=True, text=True,
                                  timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise DvcError(f"`dvc {' '.join(args)}` did not finish within dvc.timeout_s = "
                           f"{self.timeout_s:g}s in {self.repo!r} (killed): check the remote's "
                           "reachability and that no other DVC process holds the repository "
                           "lock (.dvc/tmp/lock), or raise dvc.timeout_s in params.yaml") from None
        if done.returncode != 0:
            detail = " ".join((done.stderr or done.stdout).split())
            raise DvcError(f"`dvc {' '.join(args)}` failed in {self.repo!r} "
                           f"(exit {done.returncode}): {detail}")
        return done.stdout

    def inside_stage(self) -> bool:
        """True when this process is a `dvc repro` stage command (DVC records the outputs itself)."""
        # DVC sets DVC_STAGE for every stage command; a nested `dvc commit` would fight the
        # repro's own lock on the repository.
        return bool(os.environ.get("DVC_STAGE"))

    def commit_stage(self, stage: str) -> None:
        """Record the stage's current outputs and dependencies in `dvc.lock` and the cache."""
        self.run("commit", "--force", "--quiet", stage)

    def push_stage(self, stage: str) -> None:
        """Upload the stage's outputs to the remote."""
        self.run("push", "--quiet", *(["--remote", self.remote] if self.remote else []), stage)
