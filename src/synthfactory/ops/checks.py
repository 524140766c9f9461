"""Data-quality checks over what the assets wrote (no Dagster import; `assets/checks.py` wraps them).

Each function returns a `CheckOutcome`: whether it passed, a one-line description of what it
found, and a JSON-ready dict of details that the UI shows as the check's metadata.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.shards import finished_shards, read_samples, read_shard_info


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check: pass/fail, what it found, and details for the UI."""

    passed: bool
    description: str
    details: dict[str, Any] = field(default_factory=dict)


def shard_integrity(directory: Path, pattern: str = "*.tar") -> CheckOutcome:
    """Every finished shard's sha256 and sample count match its sidecar, and every sample decodes.

    Also flags tars without a sidecar (an interrupted write) and sidecars whose keys differ from
    the tar's members.
    """
    problems: list[str] = []
    checked, samples = 0, 0
    for tar_path in sorted(directory.glob(pattern)):
        info = read_shard_info(tar_path)
        if info is None:
            problems.append(f"{tar_path.name}: no sidecar (an interrupted write?)")
            continue
        checked += 1
        actual = sha256_file(tar_path)
        if actual != info.sha256:
            problems.append(f"{tar_path.name}: sha256 {actual[:12]}… != sidecar {info.sha256[:12]}…")
            continue
        try:
            keys = [sample.key for sample in read_samples([tar_path], decode=True)]
        except (ValueError, OSError) as error:  # PIL raises OSError subclasses on bad PNGs
            problems.append(f"{tar_path.name}: a sample does not decode ({error})")
            continue
        samples += len(keys)
        if len(keys) != info.count:
            problems.append(f"{tar_path.name}: {len(keys)} samples, sidecar says {info.count}")
        elif keys != info.keys:
            problems.append(f"{tar_path.name}: sample keys differ from the sidecar's")
    if checked == 0 and not problems:
        problems.append(f"{directory}: no finished shard to check")
    description = (f"{checked} shard(s), {samples} samples: sha256, counts and decoding match"
                   if not problems else f"{len(problems)} problem(s): {problems[0]}")
    return CheckOutcome(not problems, description,
                        {"shards_checked": checked, "samples": samples, "problems": problems})


def class_balance(labels: Sequence[int], class_names: Sequence[str],
                  expected: Mapping[int, int]) -> CheckOutcome:
    """Per-class counts equal what was asked for (`expected`: class id → count), none missing.

    The synthetic shards hold exactly the images the prompts asked for, class by class; a class
    with fewer (or with images labelled as another) shows here.
    """
    counts = Counter(int(label) for label in labels)
    rows = {name: {"count": counts.get(index, 0), "expected": expected.get(index, 0)}
            for index, name in enumerate(class_names)}
    unknown = sorted(set(counts) - set(range(len(class_names))))
    wrong = {name: row for name, row in rows.items() if row["count"] != row["expected"]}
    present = [row["count"] for row in rows.values() if row["expected"] > 0]
    ratio = (max(present) / min(present)) if present and min(present) > 0 else None
    passed = not wrong and not unknown
    if passed:
        description = f"{len(labels)} samples over {len(present)} classes as the prompts ask"
    else:
        description = (f"class counts differ from the prompts: {wrong}"
                       + (f"; labels outside the class list: {unknown}" if unknown else ""))
    return CheckOutcome(passed, description, {
        "per_class": rows, "max_over_min": None if ratio is None else round(ratio, 4),
        "unknown_labels": unknown})


def pass_rate_floor(per_class: Mapping[str, Mapping[str, Any]], floor: float) -> CheckOutcome:
    """Every class keeps at least `floor` of its samples (a lower one is a generator blind spot)."""
    low = {name: round(float(row["pass_rate"]), 4) for name, row in per_class.items()
           if float(row["pass_rate"]) < floor}
    rates = [float(row["pass_rate"]) for row in per_class.values()]
    description = (f"every class keeps ≥ {floor} (lowest {min(rates):.3f})" if not low
                   else f"{len(low)} class(es) below the pass-rate floor {floor}: {low}")
    return CheckOutcome(not low, description, {"floor": floor, "below_floor": low,
                                               "lowest_pass_rate": round(min(rates), 4)})


def every_class_kept(per_class: Mapping[str, Mapping[str, Any]], minimum: int) -> CheckOutcome:
    """Every class keeps at least `minimum` samples, so downstream sets can represent it."""
    short = {name: int(row["kept"]) for name, row in per_class.items()
             if int(row["kept"]) < minimum}
    description = (f"every class keeps ≥ {minimum} sample(s)" if not short
                   else f"class(es) with fewer than {minimum} kept sample(s): {short}; loosen "
                        "filtered_set thresholds or generate more images")
    return CheckOutcome(not short, description, {"minimum": minimum, "short": short})


def distilled_size(directory: Path, n_classes: int, ipc: int) -> CheckOutcome:
    """The distilled set holds exactly `ipc` images of every class."""
    shards = finished_shards(directory)
    labels = [sample.label for sample in read_samples(shards, decode=False)]
    counts = Counter(labels)
    wrong = {index: counts.get(index, 0) for index in range(n_classes)
             if counts.get(index, 0) != ipc}
    expected = n_classes * ipc
    passed = not wrong and len(labels) == expected
    description = (f"{len(labels)} images = {ipc} per class × {n_classes} classes" if passed
                   else f"{len(labels)} images, expected {expected} ({ipc} per class); "
                        f"classes off: {wrong}")
    return CheckOutcome(passed, description, {"n_images": len(labels), "expected": expected,
                                              "classes_off": wrong})


def accuracy_floor(metrics_path: Path, floors: Mapping[str, float]) -> CheckOutcome:
    """The report's mean accuracy of each listed arm is at least its floor."""
    metrics = json.loads(metrics_path.read_text())
    arms = metrics["arms"]
    missing = metrics.get("missing_arms") or {}
    unknown = sorted(set(floors) - set(arms) - set(missing))
    if unknown:
        raise ValueError(f"eval_report.accuracy_floor names arms {unknown} that the report does "
                         f"not have; arms are {sorted(arms)}")
    # An arm that was not built has no accuracy: it does not reach its floor.
    rows = {arm: ({"accuracy": round(arms[arm]["accuracy_mean"], 4), "floor": floor}
                  if arm in arms else {"accuracy": None, "floor": floor,
                                       "not_built": missing[arm]})
            for arm, floor in floors.items()}
    low = {arm: row for arm, row in rows.items()
           if row["accuracy"] is None or row["accuracy"] < row["floor"]}
    description = ("every arm with a floor reaches it: " +
                   ", ".join(f"{arm} {row['accuracy']:.4f} ≥ {row['floor']}"
                             for arm, row in rows.items())
                   if not low else f"below the accuracy floor: {low}")
    return CheckOutcome(not low, description, {"arms": rows})
