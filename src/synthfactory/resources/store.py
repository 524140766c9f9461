"""The artifact store: where every asset writes its directory, always atomically."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import ConfigDict

from synthfactory.ops.atomic import atomic_dir, atomic_file


class ArtifactStore(dg.ConfigurableResource):
    """A root directory (default `data/`) with one sub-directory per asset.

    Assets publish through `publish_dir`/`publish_file` so a crash never leaves a finished-looking
    output; downstream assets find their inputs with `path(asset_name)`.
    """

    model_config = ConfigDict(extra="forbid")

    root: str = "data"

    def path(self, *parts: str) -> Path:
        """The path of an artifact under the root (nothing is created)."""
        return Path(self.root).joinpath(*parts)

    def require(self, *parts: str) -> Path:
        """The path of an upstream artifact, or a clear error naming the asset to materialize."""
        path = self.path(*parts)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize the asset {parts[0]!r} "
                                    f"first (store root {self.root!r})")
        return path

    @contextmanager
    def publish_dir(self, *parts: str) -> Iterator[Path]:
        """Fill a temporary directory; it replaces `path(*parts)` only when the block succeeds."""
        with atomic_dir(self.path(*parts)) as temp:
            yield temp

    @contextmanager
    def publish_file(self, *parts: str) -> Iterator[Path]:
        """Write a temporary file; it replaces `path(*parts)` only when the block succeeds."""
        with atomic_file(self.path(*parts)) as temp:
            yield temp
