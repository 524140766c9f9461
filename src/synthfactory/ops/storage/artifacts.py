"""What an op that publishes as it goes needs of the artifact store, as a protocol.

Most ops read directories and return data; the asset publishes it. A few publish one unit at a
time so that a crash keeps what is finished (a shard, a distilled cell, an expert): they take
the store through this protocol, which the store resource (`synthfactory.resources.store`)
satisfies, so ops import nothing above them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

# A logger of one line (a Dagster context's `log.info`, `print`, ...).
Log = Callable[[str], None]


class Artifacts(Protocol):
    """The artifact store as ops see it (see `ArtifactStore` for what each method does)."""

    def path(self, *parts: str) -> Path: ...

    def require(self, *parts: str) -> Path: ...

    def require_files(self, asset: str, pattern: str) -> list[Path]: ...

    def push(self, *parts: str) -> None: ...

    def refresh(self, *parts: str) -> Path: ...

    def lock(self, *parts: str) -> AbstractContextManager[Any]: ...

    def retract(self, *parts: str) -> None: ...

    def publish_dir(self, *parts: str) -> AbstractContextManager[Path]: ...

    def publish_file(self, *parts: str) -> AbstractContextManager[Path]: ...
