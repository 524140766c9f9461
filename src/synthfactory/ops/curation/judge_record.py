"""The judge's record (`judge.json`) as its readers need it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthfactory.ops.curation import JUDGE_JSON


def judge_info(judge_dir: Path) -> dict[str, Any]:
    """`judge.json` with `digest` set: the weights' sha256 of a trained judge, or the model digest
    of a CLIP judge (what shard scores were computed with)."""
    info = json.loads((judge_dir / JUDGE_JSON).read_text())
    return {**info, "digest": info.get("sha256") or info["digest"]}
