"""Arms that were not built: read from their records, listed in the report, warned about by the CLI.

An arm whose data could not be made (see `ops/storage/not_built.py`) has a classifier directory
holding only `not_built.json`. The report keeps every arm that was built and says, in its own
section (`ops/report/missing.py`) and in `metrics.json` (`missing_arms: {arm: reason}`, empty
when none), which are missing and why: an honest partial answer rather than none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthfactory.ops.checks import CheckOutcome
from synthfactory.ops.storage.not_built import read_not_built


def missing_arms(classifier_dirs: Mapping[str, Path]) -> dict[str, str]:
    """arm → why it was not built, for the arms whose classifier directory is a not-built record."""
    missing = {}
    for arm, directory in classifier_dirs.items():
        record = read_not_built(directory)
        if record is not None:
            missing[arm] = str(record["reason"])
    return missing


def missing_arm_lines(missing: Mapping[str, str]) -> list[str]:
    """One line per missing arm, as the CLI prints them."""
    return [f"arm {arm!r} was not built: {reason}" for arm, reason in sorted(missing.items())]


def arms_built(metrics: dict[str, Any]) -> CheckOutcome:
    """Passes when the report measured every arm; fails naming each missing arm and why."""
    missing = metrics.get("missing_arms") or {}
    if not missing:
        return CheckOutcome(True, f"every arm was built ({len(metrics['arms'])})",
                            {"missing_arms": {}})
    return CheckOutcome(False, f"{len(missing)} arm(s) not built: "
                               + "; ".join(missing_arm_lines(missing)),
                        {"missing_arms": dict(missing), "built": sorted(metrics["arms"])})
