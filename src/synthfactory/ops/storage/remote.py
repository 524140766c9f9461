"""An object-store mirror of the artifact store (any fsspec URL: `s3://bucket/prefix`, `gs://…`).

Assets always read and write local files (libraries such as webdataset, safetensors and PIL
want paths); when the store root is a URL, a local cache directory holds the working copy and
this module moves whole *units* between the two:

- a unit is what one publish writes: an asset directory (`generator`), one file
  (`prompts/prompts.jsonl`), or one file of a partitioned asset (`synthetic_shards/shard-00000.tar`);
- `push` uploads a unit's files, then writes its commit record `<url>/_commits/<unit>.json`
  (every file's sha256 and size) *last*: object stores have no rename, so the commit is what
  makes a unit visible, and a crashed upload leaves no commit;
- `pull` downloads a unit whose commit differs from the cached copy of that commit, checks every
  file's sha256 against it, and renames it into the cache atomically. A unit overwritten while
  being read fails the check loudly instead of mixing two versions;
- two writers of one unit (two runs of the same partition, on one machine or two) take turns:
  `push` holds the unit's lease `<url>/_locks/<unit>.json` (created with an exclusive write, see
  `locks.py`) from removing the old commit to writing the new one, so the files under a commit
  are always the ones it lists. `lease` lets a caller hold a partition for longer (generate,
  then push).

Many machines pointing at one URL (each with its own cache) thereby share data.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

from synthfactory.ops.storage.atomic import atomic_dir, atomic_file, dumps_json, sha256_file
from synthfactory.ops.storage.locks import lease

COMMITS = "_commits"  # the prefix of the commit records, beside the asset prefixes
LOCKS = "_locks"  # the prefix of the writers' leases
LOCAL_COMMITS = ".commits"  # the cache's copies of the commits it holds


def is_url(root: str) -> bool:
    """True when a store root is an fsspec URL other than a local `file://` one."""
    return "://" in root and not root.startswith("file://")


class RemoteMirror:
    """Moves units between an fsspec URL (`url`) and a local cache directory (`cache`)."""

    def __init__(self, url: str, cache: Path, storage_options: dict[str, Any] | None = None):
        """Open the filesystem of `url`; an unknown protocol or a missing driver names the fix."""
        import fsspec  # imported here: `import synthfactory.definitions` must stay fast

        protocol = url.split("://", 1)[0]
        try:
            self.fs = fsspec.filesystem(protocol, **(storage_options or {}))
        except (ImportError, ValueError) as error:
            raise ValueError(f"store.root {url!r}: cannot open the {protocol!r} filesystem "
                             f"({error}); for s3:// install s3fs (pip install 'synthfactory[s3]'), "
                             "for other object stores their fsspec driver") from error
        self.url = url.rstrip("/")
        self.cache = cache

    def _remote(self, unit: str) -> str:
        return f"{self.url}/{unit}"

    def _commit(self, unit: str) -> str:
        return f"{self.url}/{COMMITS}/{unit}.json"

    def _local_commit(self, unit: str) -> Path:
        return self.cache / LOCAL_COMMITS / f"{unit}.json"

    def lease(self, unit: str) -> Any:
        """A context manager holding the writers' lease of `unit` (see `locks.lease`)."""
        return lease(self.fs, f"{self.url}/{LOCKS}/{unit}.json")

    def push(self, unit: str) -> dict[str, Any]:
        """Upload the cached unit (a file or a directory), then its commit; returns the commit.

        Holds the unit's lease throughout, so a concurrent push of the same unit waits.
        """
        with self.lease(unit):
            return self._push(unit)

    def _push(self, unit: str) -> dict[str, Any]:
        self.fs.invalidate_cache()  # listings cached by fsspec may predate other machines' writes
        local = self.cache / unit
        if not local.exists():
            raise FileNotFoundError(f"cannot push {unit!r}: {local} does not exist")
        files = ({"": local} if local.is_file() else
                 {p.relative_to(local).as_posix(): p for p in sorted(local.rglob("*")) if p.is_file()})
        commit = {"unit": unit, "kind": "file" if local.is_file() else "dir",
                  "files": {name: {"sha256": sha256_file(path), "size": path.stat().st_size}
                            for name, path in files.items()}}
        # The old commit goes first, so no reader pairs it with half-replaced bytes.
        if self.fs.exists(self._commit(unit)):
            self.fs.rm(self._commit(unit))
        remote = self._remote(unit)
        if commit["kind"] == "dir" and self.fs.exists(remote):
            # Files of the previous version that the new one no longer has.
            stale = set(self.fs.find(remote)) - {
                self.fs._strip_protocol(f"{remote}/{name}") for name in files}
            for path in sorted(stale):
                self.fs.rm(path)
        for name, path in files.items():
            self.fs.put_file(str(path), f"{remote}/{name}" if name else remote)
        text = dumps_json(commit)
        self.fs.pipe_file(self._commit(unit), text.encode())
        _write_text_atomic(self._local_commit(unit), text)
        return commit

    def retract(self, unit: str) -> None:
        """Withdraw a unit's commit (its bytes stay until the next push): readers stop seeing it,
        and caches drop it on their next pull of the directory above."""
        self.fs.invalidate_cache()
        if self.fs.exists(self._commit(unit)):
            self.fs.rm(self._commit(unit))
        self._local_commit(unit).unlink(missing_ok=True)

    def units(self, unit: str) -> list[str]:
        """The committed units that `unit` names: itself or the unit that contains it (a file
        inside a pushed directory), else every committed unit below it (a partitioned asset's
        directory). Empty when nothing is committed there."""
        parts = unit.split("/")
        for end in range(1, len(parts) + 1):
            candidate = "/".join(parts[:end])
            if self.fs.exists(self._commit(candidate)):
                return [candidate]
        below = f"{self.url}/{COMMITS}/{unit}"
        if not self.fs.exists(below):
            return []
        prefix = self.fs._strip_protocol(f"{self.url}/{COMMITS}") + "/"
        return sorted(path[len(prefix):-len(".json")] for path in self.fs.find(below)
                      if path.endswith(".json"))

    def pull(self, unit: str, match: str | None = None) -> list[str]:
        """Bring every committed unit that `unit` names into the cache (downloading only those
        whose commit changed, and dropping cached units below `unit` that the store no longer
        has); returns the units, empty when the store has none. With `match` (a glob on the
        name below `unit`, e.g. `shard-*.json`) only the units whose name matches."""
        self.fs.invalidate_cache()  # listings cached by fsspec may predate other machines' writes
        units = self.units(unit)
        if match is not None:
            units = [name for name in units if fnmatch.fnmatch(name[len(unit) + 1:], match)]
        for name in units:
            self._pull_unit(name)
        local_below = self.cache / LOCAL_COMMITS / unit
        if units and units != [unit] and local_below.is_dir():
            for stale in sorted(local_below.rglob("*.json")):
                name = stale.relative_to(self.cache / LOCAL_COMMITS).as_posix()[:-len(".json")]
                if match is not None and not fnmatch.fnmatch(name[len(unit) + 1:], match):
                    continue  # not asked for: left as it is
                if name not in units:  # deleted or replaced elsewhere: not part of the data now
                    _remove(self.cache / name)
                    stale.unlink()
        return units

    def _pull_unit(self, unit: str) -> None:
        confined(unit, "unit")
        text = self.fs.cat_file(self._commit(unit)).decode()
        local, local_commit = self.cache / unit, self._local_commit(unit)
        if local.exists() and local_commit.exists() and local_commit.read_text() == text:
            return  # the cache already holds this version
        commit = json.loads(text)
        remote = self._remote(unit)
        if commit["kind"] == "file":
            if set(commit["files"]) != {""}:
                raise ValueError(f"the commit record of file unit {unit!r} lists files "
                                 f"{sorted(commit['files'])}; a file unit lists only ''")
            with atomic_file(local) as temp:
                self.fs.get_file(remote, str(temp))
                _verify(temp, commit["files"][""], f"{remote}")
        else:
            with atomic_dir(local) as temp:
                for name, expected in commit["files"].items():
                    target = temp / confined(name, f"file of unit {unit!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(f"{remote}/{name}", str(target))
                    _verify(target, expected, f"{remote}/{name}")
        _write_text_atomic(local_commit, text)


def confined(name: str, what: str) -> str:
    """`name` (a unit or a file name from a commit record, which another machine wrote) as a
    relative POSIX path that stays inside the cache: no absolute path, no `..`, no backslash,
    no empty part. Anything else is refused, naming it."""
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or ":" in parts[0]
            or any(part in {"", ".", ".."} for part in parts)):
        raise ValueError(f"{what} {name!r} in the object store's commit records is not a relative "
                         "path inside the store (absolute, '..', '.', empty part or backslash): "
                         "refusing to write outside the cache; remove that commit record")
    return name


def _verify(path: Path, expected: dict[str, Any], source: str) -> None:
    """Fail loudly when a downloaded file is not the committed one."""
    actual = sha256_file(path)
    if actual != expected["sha256"]:
        raise RuntimeError(f"{source}: sha256 {actual[:12]}… does not match its commit "
                           f"({expected['sha256'][:12]}…): it changed while being read or was "
                           "modified outside synthfactory; materialize the asset again")


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as temp:
        temp.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
