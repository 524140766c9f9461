"""The record of an output that could not be built from its inputs, and why.

An evaluation arm whose data cannot be made (a class the filter emptied, `ipc` above what a class
kept, ...) is not a failed run: its asset publishes a directory holding only `not_built.json`
(the asset, the reason, the upstream asset it came from), atomically like any other output.
Downstream readers find the record instead of data and pass the reason on, so the report lists
the arm as missing and why, and every other arm is still trained and measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthfactory.ops.storage.atomic import dumps_json

NOT_BUILT_JSON = "not_built.json"


def not_built_record(asset: str, reason: str, upstream: str | None = None) -> dict[str, Any]:
    """The record: `upstream` names the asset whose own record this one passes on (None when
    `asset` is where the data ran out)."""
    return {"asset": asset, "built": False, "reason": reason, "upstream": upstream}


def write_not_built(directory: Path, asset: str, reason: str,
                    upstream: str | None = None) -> dict[str, Any]:
    """Write the record into `directory` (a publishing temporary) and return it."""
    record = not_built_record(asset, reason, upstream)
    (directory / NOT_BUILT_JSON).write_text(dumps_json(record))
    return record


def read_not_built(directory: Path) -> dict[str, Any] | None:
    """The not-built record of an output directory, or None when the output was built."""
    path = directory / NOT_BUILT_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text())
