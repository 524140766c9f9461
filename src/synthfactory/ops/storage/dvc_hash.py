"""DVC's content digest of a file or directory, computed here without importing DVC.

DVC 3 records a file by the md5 of its bytes and a directory by the md5 of the JSON list of its
files (`[{"md5": ..., "relpath": ...}, ...]`, sorted by relpath, keys sorted) plus the suffix
`.dir`. Computing the same value here lets Dagster show, for every materialization, the digest
that `dvc.lock` records for that output, even where DVC itself is not installed; a test checks
the equality against the real `dvc` command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """md5 of a file's bytes, as DVC 3 records it."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_md5(root: Path, files: Iterable[Path]) -> str:
    """DVC's directory digest (`<md5>.dir`) of the given files under `root`."""
    entries = sorted(({"md5": file_md5(path), "relpath": path.relative_to(root).as_posix()}
                      for path in files), key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def dvc_md5(path: Path) -> str:
    """The digest DVC records for `path`: `<md5>` for a file, `<md5>.dir` for a directory."""
    if path.is_file():
        return file_md5(path)
    if path.is_dir():
        return tree_md5(path, (p for p in path.rglob("*") if p.is_file()))
    raise FileNotFoundError(f"{path} does not exist: nothing to digest (was the asset that writes "
                            "it materialized?)")
