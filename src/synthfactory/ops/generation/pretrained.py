"""Pretrained model directories: where they come from, what they hold, and refusing pickle.

A model is named by a local directory or a hub id (`org/name`). Either way it ends up as a
local directory (a hub id resolves to its snapshot in the Hugging Face cache, downloaded only
when `local_files_only` is false), which must hold its weights as safetensors: pickle weights
(`.bin`, `.ckpt`, `.pt`, …) can run code when loaded, so they are refused before anything reads
them. The record of a model — source, revision, content digest, file sizes — goes into the
asset's JSON so that a changed model is noticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthfactory.ops.storage.atomic import digest_of_digests, sha256_file

PICKLE_SUFFIXES = frozenset({".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"})
# Files a hub snapshot needs: configs, tokenizer files and safetensors weights — never pickle.
HUB_ALLOW_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model", "*.yaml"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class UnsafeWeightsError(ValueError):
    """A model directory whose weights are pickle files: refused without reading them."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: its local directory, what the user named, and the hub revision if any."""

    path: Path
    name: str
    revision: str | None

    def record(self) -> dict[str, Any]:
        """Source, revision, content digest and file sizes, for the asset's JSON record."""
        files = model_files(self.path)
        return {"source": self.name, "path": str(self.path), "revision": self.revision,
                "digest": digest_of_digests([f"{name}:{sha256_file(self.path / name)}"
                                             for name in files]),
                "files": files}


def resolve_model(name: str, *, what: str, revision: str | None = None,
                  local_files_only: bool = False) -> ModelSource:
    """A local directory as it is, or a hub id resolved to its snapshot; safetensors only.

    `what` names the params key in errors (e.g. `generator.model`).
    """
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            hint = (" (a pickle checkpoint: synthfactory loads safetensors only)"
                    if path.suffix in PICKLE_SUFFIXES else "")
            raise ValueError(f"{what} {name!r} is a file{hint}; give a model directory in "
                             "diffusers/transformers format (save_pretrained) or a hub id")
        check_safetensors_only(path, what=what)
        return ModelSource(path=path.resolve(), name=name, revision=revision)
    if not HUB_ID.match(name):
        raise FileNotFoundError(f"{what} {name!r}: the model directory does not exist (and it is "
                                "not a hub id like org/name); check the path")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(name, revision=revision,
                                          local_files_only=local_files_only,
                                          allow_patterns=HUB_ALLOW_PATTERNS))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{what} {name!r} (revision {revision or 'main'}) is neither an existing directory "
            f"nor in the Hugging Face cache {constants.HF_HUB_CACHE}, and cannot be downloaded "
            f"(offline or local_files_only): check the path, or run `hf download {name}` where "
            "there is network"
        ) from None
    check_safetensors_only(snapshot, what=what)
    # The snapshot folder is named by the commit: the exact revision that was used.
    return ModelSource(path=snapshot, name=name, revision=snapshot.name)


def check_safetensors_only(directory: Path, *, what: str) -> None:
    """Refuse a directory where some folder holds pickle weights and no safetensors.

    A folder with both (common in hub repositories) is fine: loading asks for safetensors, and
    the pickle files are never opened.
    """
    for folder in sorted({directory, *(p for p in directory.rglob("*") if p.is_dir())}):
        files = [p for p in folder.iterdir() if p.is_file()]
        pickles = sorted(p for p in files if p.suffix in PICKLE_SUFFIXES)
        if pickles and not any(p.suffix == ".safetensors" for p in files):
            raise UnsafeWeightsError(
                f"{what}: {pickles[0]} holds pickle weights ({pickles[0].suffix}), which can run "
                "code when loaded; safetensors are required — convert the model with "
                "save_pretrained(..., safe_serialization=True) and remove the pickle files")


def model_files(directory: Path) -> dict[str, int]:
    """Relative path → size of the files a loader may read (hidden files and pickles left out)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        if path.suffix in PICKLE_SUFFIXES or any(part.startswith(".") for part in relative.parts):
            continue
        files[relative.as_posix()] = path.stat().st_size
    return files


def check_unchanged(record: dict[str, Any], *, what: str) -> Path:
    """The recorded model directory, if its files still have the recorded names and sizes.

    Hashing gigabytes again at every step would be slow; names and sizes catch a swapped model,
    and the digest in the record is what data versions use.
    """
    path = Path(record["path"])
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: the model directory {path} recorded when it was "
                                "materialized is gone; materialize it again")
    if model_files(path) != record["files"]:
        raise ValueError(f"{what}: the files of {path} changed since it was materialized; "
                         "materialize it again so the digest matches the weights")
    return path
