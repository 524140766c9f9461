"""What every params section shares: unknown keys are errors, and digests of config."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import dagster as dg
from pydantic import ConfigDict


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the key, the value and the fix."""


class Section(dg.Config):
    """Base of every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def config_digest(value: Any) -> str:
    """A short, stable digest of any JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

