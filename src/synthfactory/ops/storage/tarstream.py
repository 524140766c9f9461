"""A fast sequential reader of the members of a ustar tar (the format `shards.write_tar` writes).

Python's `tarfile` (which WebDataset's own tar iterator wraps) spends ~0.2 ms of interpreter
time per member building TarInfo objects; a training stream of small images reads three
members per sample, so that alone caps a loader worker near 1,500 samples/s. Reading the
512-byte headers directly is ~30× faster. Headers are checked (checksum, size field) and a
member of another kind than a regular file or directory — pax or GNU long-name headers, links,
devices — is refused: those never occur in the shards synthfactory writes (real images from a
user's own tars are re-written into such shards first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

BLOCK = 512
_REGULAR = {b"0", b"\0"}
_DIRECTORY = b"5"


class TarFormatError(ValueError):
    """A tar that is not a plain ustar shard (or is damaged)."""


def iter_members(path: Path, buffering: int = 1 << 20) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file in a ustar tar, in order."""
    with open(path, "rb", buffering=buffering) as handle:
        while True:
            header = handle.read(BLOCK)
            if not header or header.count(0) == BLOCK:
                return  # end of archive (zero blocks, or a file that ends without them)
            if len(header) < BLOCK:
                raise TarFormatError(f"{path}: truncated in a tar header: the shard is corrupt; "
                                     "materialize it again")
            stored = header[148:156].split(b"\0", 1)[0].strip()
            actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
            if not stored or int(stored, 8) != actual:
                raise TarFormatError(f"{path}: damaged tar header at byte {handle.tell() - BLOCK} "
                                     "(checksum mismatch): the shard is corrupt; materialize it "
                                     "again")
            kind = header[156:157]
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            prefix = header[345:500].split(b"\0", 1)[0]
            name = header[:100].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
            if kind not in _REGULAR and kind != _DIRECTORY:
                raise TarFormatError(f"{path}: member {name!r} is of tar type {kind!r}; shards "
                                     "hold plain files only (ustar, names up to 100 bytes)")
            data = handle.read(size)
            if len(data) < size:
                raise TarFormatError(f"{path}: member {name!r} is truncated: the shard is "
                                     "corrupt; materialize it again")
            handle.seek((-size) % BLOCK, 1)
            if kind in _REGULAR:
                yield name.decode(), data
