"""The artifact store: where every asset writes its directory, always atomically."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr

from synthfactory.ops.storage.atomic import atomic_dir, atomic_file
from synthfactory.ops.storage.locks import lease
from synthfactory.ops.storage.remote import RemoteMirror, is_url


class ArtifactStore(dg.ConfigurableResource):
    """A root directory (default `data/`) with one sub-directory per asset.

    Assets publish through `publish_dir`/`publish_file` so a crash never leaves a finished-looking
    output; downstream assets find their inputs with `require(asset_name)`.

    `root` may also be an fsspec URL (`s3://bucket/prefix`): then many machines share the data.
    Assets still read and write local files, in `cache`; publishing uploads the unit and its
    commit record, and `require` downloads what the object store has and the cache lacks (see
    `synthfactory.ops.storage.remote`). With a local root nothing of this happens.
    """

    model_config = ConfigDict(extra="forbid")

    root: str = "data"
    # The local working copy when `root` is a URL (ignored for a local root).
    cache: str = "data"
    # fsspec options of the URL's filesystem, e.g. {endpoint_url: http://127.0.0.1:9000} for
    # an S3-compatible server; credentials come from the usual environment/profile chain.
    storage_options: dict[str, Any] = Field(default_factory=dict)

    # A replicate's view (`for_replicate`): its id and the assets it holds its own copy of.
    _replicate: str | None = PrivateAttr(default=None)
    _replicated: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def for_replicate(self, replicate: str, assets: Iterable[str]) -> ArtifactStore:
        """The store as replicate `replicate` (r1, r2, …) sees it: each of `assets` under
        `<root>/<replicate>/<asset>` (where the asset copy `<replicate>/<asset>` publishes),
        every other asset — the real images, the generator, the judge — the shared one."""
        view = self.model_copy()
        view._replicate, view._replicated = replicate, frozenset(assets)
        return view

    def _unit(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """The path parts of an artifact under the root, through a replicate's view."""
        if self._replicate is not None and parts and parts[0] in self._replicated:
            return (self._replicate, *parts)
        return parts

    @property
    def is_remote(self) -> bool:
        """True when `root` is an object-store URL."""
        return is_url(self.root)

    @property
    def local_root(self) -> Path:
        """The directory assets read and write: `root`, or `cache` when `root` is a URL."""
        return Path(self.cache if self.is_remote else self.root)

    def mirror(self) -> RemoteMirror:
        """The object-store mirror of a URL root."""
        if not self.is_remote:
            raise ValueError(f"store.root {self.root!r} is a local path: there is no object store "
                             "to mirror (set store.root to a URL such as s3://bucket/prefix)")
        return RemoteMirror(self.root, self.local_root, self.storage_options)

    def path(self, *parts: str) -> Path:
        """The local path of an artifact under the root (nothing is created or downloaded)."""
        return self.local_root.joinpath(*self._unit(parts))

    def require(self, *parts: str) -> Path:
        """The path of an upstream artifact (downloaded first when the root is a URL), or a clear
        error naming the asset to materialize."""
        path = self.path(*parts)
        if self.is_remote:
            self.mirror().pull("/".join(self._unit(parts)))
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize the asset {parts[0]!r} "
                                    f"first (store root {self.root!r})")
        return path

    def require_files(self, asset: str, pattern: str) -> list[Path]:
        """The files of a partitioned asset's directory whose names match `pattern` (a glob),
        sorted; with an object-store root only those are downloaded (a filter reads the shards'
        sidecars and scores, never their tars)."""
        if self.is_remote:
            self.mirror().pull("/".join(self._unit((asset,))), match=pattern)
        return sorted(self.path(asset).glob(pattern))

    def push(self, *parts: str) -> None:
        """Upload an artifact that an op wrote in place (a shard) when the root is a URL."""
        if self.is_remote:
            self.mirror().push("/".join(self._unit(parts)))

    def refresh(self, *parts: str) -> Path:
        """The local path of an artifact, downloaded first when the object store has a newer
        commit of it; unlike `require`, a missing artifact is not an error (it may be about to be
        written)."""
        if self.is_remote:
            self.mirror().pull("/".join(self._unit(parts)))
        return self.path(*parts)

    def lock(self, *parts: str) -> AbstractContextManager[Any]:
        """Hold the writers' lease of an artifact (one partition, say) for a block: two runs of
        the same partition take turns instead of racing. On an object store the lease is an
        object under `_locks/`, shared by every machine; on a local root a file under `.locks/`."""
        unit = "/".join(self._unit(parts))
        if self.is_remote:
            return self.mirror().lease(f"partition/{unit}")
        import fsspec

        path = self.local_root.resolve() / ".locks" / f"{unit}.json"
        return lease(fsspec.filesystem("file"), path.as_posix())

    def retract(self, *parts: str) -> None:
        """Withdraw an artifact from the object store before rewriting it in place (a shard's
        sidecar, as `write_shard` removes it locally), when the root is a URL."""
        if self.is_remote:
            self.mirror().retract("/".join(self._unit(parts)))

    def leased(self, asset: str, keys: Iterable[str]) -> Iterator[str]:
        """`keys` (an asset's partition keys), each yielded while its lease
        (`lock(asset, key)`) is held: `for key in store.leased("synthetic_shards", keys):` makes
        each partition's write one writer's at a time. The lease is released when the loop body
        moves on, and when it raises (the generator is closed with the loop's frame)."""
        for key in keys:
            with self.lock(asset, key):
                yield key

    @contextmanager
    def publish_dir(self, *parts: str) -> Iterator[Path]:
        """Fill a temporary directory; it replaces `path(*parts)` only when the block succeeds.

        The unit's lease is held from the first byte to the upload, so two runs publishing the
        same unit (one cell, one expert, one asset) take turns instead of renaming over each
        other."""
        with self.lock(*parts):
            with atomic_dir(self.path(*parts)) as temp:
                yield temp
            self.push(*parts)

    @contextmanager
    def publish_file(self, *parts: str) -> Iterator[Path]:
        """Write a temporary file; it replaces `path(*parts)` only when the block succeeds
        (under the unit's lease, like `publish_dir`)."""
        with self.lock(*parts):
            with atomic_file(self.path(*parts)) as temp:
                yield temp
            self.push(*parts)
