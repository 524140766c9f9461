"""Data-quality checks over what the assets wrote (no Dagster import; `assets/checks.py` wraps them).

Each function returns a `CheckOutcome`: whether it passed, a one-line description of what it
found, and a JSON-ready dict of details that the UI shows as the check's metadata.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthfactory.ops.data.prompts import PromptRecord, shard_count, shard_key, shard_slice
from synthfactory.ops.storage.atomic import sha256_file
from synthfactory.ops.storage.not_built import read_not_built
from synthfactory.ops.storage.shards import finished_shards, read_samples, read_shard_info


# A failing check's one-line description names at most this many classes (details: all).
MAX_NAMED_CLASSES = 12


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


def manifest_integrity(directory: Path, manifest: Mapping[str, Any]) -> CheckOutcome:
    """The shards a manifest records are all there, intact, and nothing else is.

    Checks against the record, not against what happens to be on disk: every shard the
    manifest lists (`shards`: name, count, sha256) must exist with its sidecar and match its
    recorded sha256 and count (a deleted shard, with or without its sidecar, fails: the real
    arm would otherwise train on fewer images); the per-split counts must add up to the
    recorded `counts`; a finished shard the manifest does not list fails too (it belongs to
    another write). Then `shard_integrity` decodes every sample of what is there.
    """
    recorded = {shard["name"]: shard for shard in manifest.get("shards", [])}
    problems: list[str] = []
    if not recorded:
        problems.append(f"{directory}: the manifest lists no shard (rewrite it: materialize "
                        "real_images)")
    for name, shard in sorted(recorded.items()):
        tar_path = directory / name
        info = read_shard_info(tar_path)
        if info is None:
            problems.append(f"{name}: in the manifest but missing from the store (tar or sidecar "
                            "deleted): materialize real_images again")
        elif info.sha256 != shard["sha256"] or info.count != shard["count"]:
            problems.append(f"{name}: sidecar says {info.count} samples, sha256 "
                            f"{info.sha256[:12]}…; the manifest recorded {shard['count']}, "
                            f"{shard['sha256'][:12]}…")
    extra = sorted(p.name for p in finished_shards(directory) if p.name not in recorded)
    if extra:
        problems.append(f"finished shard(s) the manifest does not list: {extra}")
    for split, per_class in (manifest.get("counts") or {}).items():
        in_shards = sum(shard["count"] for shard in recorded.values() if shard["split"] == split)
        if in_shards != sum(per_class.values()):
            problems.append(f"split {split}: the manifest's shards hold {in_shards} samples, its "
                            f"counts say {sum(per_class.values())}")
    integrity = shard_integrity(directory)
    if not integrity.passed:
        problems += [p for p in integrity.details["problems"] if p not in problems]
    description = (f"{len(recorded)} recorded shard(s), {integrity.details['samples']} samples: "
                   "all present, sha256, counts and decoding match the manifest" if not problems
                   else f"{len(problems)} problem(s): {problems[0]}")
    return CheckOutcome(not problems, description, {
        "shards_recorded": len(recorded), "samples": integrity.details["samples"],
        "problems": problems})


def shard_class_balance(directory: Path, records: Sequence[PromptRecord],
                        class_names: Sequence[str], shard_size: int,
                        made: Collection[str] | None = None) -> CheckOutcome:
    """The shards hold, class by class, the images the prompt records ask for, less counted drops.

    The expected images are the prompt records of every shard that should exist: all of them
    (`made` None), or the shards in `made` (the partitions Dagster recorded as materialized)
    plus any shard with a file in `directory`; a shard not yet made is listed, not counted.
    An absent image is allowed only as a drop counted in its shard's sidecar
    (`bad_images: {"dropped:<problem>": n}`, written by `synthetic_shards` with
    `bad_images: drop`): a shard whose absent images number exactly its counted drops is
    consistent; a deleted shard, or a shard that lost images its sidecar does not count as
    dropped, fails, with the missing count per class. Samples that no record of their shard
    asks for, or whose label differs from their record's class, fail too.
    """
    all_keys = [shard_key(index) for index in range(shard_count(len(records), shard_size))]
    expected_keys = [key for key in all_keys
                     if made is None or key in made
                     or any((directory / f"shard-{key}{ext}").exists() for ext in (".tar", ".json"))]
    not_made = [key for key in all_keys if key not in expected_keys]
    rows = {name: {"images": 0, "expected": 0, "dropped": 0, "missing": 0} for name in class_names}
    problems: list[str] = []
    missing_shards: list[str] = []
    for key in expected_keys:
        asked = shard_slice(records, key, shard_size)
        for record in asked:
            rows[class_names[record.class_id]]["expected"] += 1
        tar_path = directory / f"shard-{key}.tar"
        info = read_shard_info(tar_path)
        if info is None:
            missing_shards.append(key)
            for record in asked:
                rows[class_names[record.class_id]]["missing"] += 1
            continue
        class_of = {record.key: record.class_id for record in asked}
        present: set[str] = set()
        for sample in read_samples([tar_path], decode=False):
            if sample.key not in class_of:
                problems.append(f"shard {key}: sample {sample.key!r} is not among its prompt "
                                "records (the shards are from other prompts)")
                continue
            if sample.label != class_of[sample.key]:
                problems.append(f"shard {key}: sample {sample.key!r} is labelled "
                                f"{sample.label}, its prompt asked for class "
                                f"{class_of[sample.key]}")
            present.add(sample.key)
            label = sample.label if 0 <= sample.label < len(class_names) else None
            if label is not None:
                rows[class_names[label]]["images"] += 1
        absent = [record for record in asked if record.key not in present]
        dropped = sum(int(count) for reason, count in info.extra.get("bad_images", {}).items()
                      if reason.startswith("dropped:"))
        column = "dropped" if len(absent) == dropped else "missing"
        if column == "missing":
            problems.append(f"shard {key}: {len(absent)} image(s) absent, its sidecar counts "
                            f"{dropped} dropped")
        for record in absent:
            rows[class_names[record.class_id]][column] += 1
    if missing_shards:
        problems.insert(0, f"shard(s) {', '.join(missing_shards)} missing from the store")
    short = {name: row["missing"] for name, row in rows.items() if row["missing"]}
    n_images = sum(row["images"] for row in rows.values())
    n_expected = sum(row["expected"] for row in rows.values())
    n_dropped = sum(row["dropped"] for row in rows.values())
    off = {name for name, row in rows.items()
           if row["images"] + row["dropped"] + row["missing"] != row["expected"]}
    passed = not problems and not short and not off
    if passed:
        description = (f"{n_images} samples over {len(expected_keys)} shard(s), class by class "
                       f"as the prompts ask" + (f" ({n_dropped} dropped as bad images, counted "
                                                "in the sidecars)" if n_dropped else ""))
    else:
        parts = [f"class {name}: {count} missing" for name, count in short.items()]
        parts += [f"class {name}: {rows[name]['images']} images, expected "
                  f"{rows[name]['expected']}" for name in sorted(off) if name not in short]
        if len(parts) > MAX_NAMED_CLASSES:  # the details name every class
            parts = [*parts[:MAX_NAMED_CLASSES], f"… {len(parts) - MAX_NAMED_CLASSES} more"]
        description = (f"{n_expected - n_images - n_dropped} of {n_expected} images the prompts "
                       f"ask for are not in the shards: " + "; ".join(parts + problems[:3]))
    if not_made:
        description += f"; shard(s) not made yet: {', '.join(not_made)}"
    present_counts = [row["images"] for row in rows.values() if row["expected"]]
    ratio = (max(present_counts) / min(present_counts)
             if present_counts and min(present_counts) > 0 else None)
    return CheckOutcome(passed, description, {
        "per_class": rows, "missing_per_class": short, "missing_shards": missing_shards,
        "not_made_yet": not_made, "problems": problems,
        "max_over_min": None if ratio is None else round(ratio, 4)})


def shards_filtered(used: Mapping[str, str], finished: Mapping[str, str]) -> CheckOutcome:
    """Every finished synthetic shard (`finished`: name → its sidecar's sha256) went into the
    filtered set with those very bytes (`used`: the filtered summary's `shard_digests`).

    A shard the filter left out (its scores were missing or stale: computed for other bytes or
    under another judge) or a shard rewritten since the filter ran fails, naming the shards and
    the fix; the filter itself only logs them.
    """
    left_out = sorted(name for name in finished if name not in used)
    changed = sorted(name for name in finished if name in used and used[name] != finished[name])
    gone = sorted(name for name in used if name not in finished)
    problems = []
    if left_out:
        problems.append(f"shard(s) {left_out} are not in the filtered set (no current scores when "
                        "it ran): materialize shard_scores for them, then filtered_set")
    if changed:
        problems.append(f"shard(s) {changed} were rewritten after the filter ran: materialize "
                        "shard_scores and filtered_set again")
    if gone:
        problems.append(f"shard(s) {gone} that the filter used are no longer finished in the store")
    description = ("; ".join(problems) if problems else
                   f"all {len(finished)} finished shard(s) are in the filtered set, with their "
                   "current bytes")
    return CheckOutcome(not problems, description, {"left_out": left_out, "rewritten": changed,
                                                    "gone": gone, "used": len(used)})


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
    """The distilled set's finished shards hold exactly `ipc` images of every class."""
    return distilled_size_of(finished_shards(directory), n_classes, ipc)


def distilled_cells(directory: Path, n_classes: int, cells: Sequence[tuple[str, int | None]]
                    ) -> CheckOutcome:
    """Every finished cell `(key, ipc)` holds `ipc` images of every class in each repeat's
    intact shard (ipc None, the whole-source cell: at least one of every class), and so does
    the headline shard (the first cell's, at the top) once the first
    cell is finished. A cell not made yet is listed, not failed: a run may make one cell (a
    backfill gives each its own); so is a cell recorded as not built (its data could not make
    it), with its reason, which leads the description. No finished or recorded cell fails.
    """
    # deferred: cellstore imports torch, and the checks load with the code location
    from synthfactory.ops.distillation.cellstore import CELL_JSON, CELLS_DIR

    finished: dict[str, list[int]] = {}
    not_built: dict[str, str] = {}
    missing, problems = [], []
    headline_images = 0
    for index, (key, ipc) in enumerate(cells):
        cell = directory / CELLS_DIR / key
        record = read_not_built(cell)
        if record is not None:
            not_built[key] = str(record["reason"])
            continue
        if not (cell / CELL_JSON).is_file():
            missing.append(key)
            continue
        places = [(cell, "repeat-*.tar")] + ([(directory, "distilled-*.tar")] if index == 0
                                             else [])
        for place, pattern in places:
            integrity = shard_integrity(place, pattern)
            if not integrity.passed:
                problems.append(f"{key}: {integrity.description}")
                continue
            for shard in finished_shards(place, pattern):
                size = distilled_size_of([shard], n_classes, ipc)
                if not size.passed:
                    problems.append(f"{key} {shard.name}: {size.description}")
                if place == cell:
                    finished.setdefault(key, []).append(size.details["n_images"])
                else:
                    headline_images = size.details["n_images"]
    if not finished and not not_built and not problems:
        problems.append(f"no finished cell in {directory} (cells: {', '.join(k for k, _ in cells)})")
    if problems:
        description = f"{len(problems)} problem(s): {problems[0]}"
    else:
        description = (f"{len(finished)} finished cell(s) of {len(cells)}: every repeat holds "
                       "ipc images per class"
                       + (f"; not made yet: {', '.join(missing)}" if missing else ""))
        if not_built:  # the reasons first: what a reader must act on
            description = ("; ".join(f"not built: cell {key}: {reason}"
                                     for key, reason in not_built.items())
                           + f" ({description})")
    return CheckOutcome(not problems, description, {
        "n_images": headline_images, "cells": finished, "missing": missing,
        "not_built": not_built, "problems": problems})


def distilled_size_of(shards: Sequence[Path], n_classes: int, ipc: int | None) -> CheckOutcome:
    """The shards hold exactly `ipc` images of every class (None: at least one of each, the
    whole-source cell)."""
    labels = [sample.label for sample in read_samples(shards, decode=False)]
    counts = Counter(labels)
    if ipc is None:
        absent = [index for index in range(n_classes) if not counts.get(index)]
        return CheckOutcome(not absent, f"{len(labels)} images, every class present" if not absent
                            else f"{len(labels)} images; classes without an image: {absent}",
                            {"n_images": len(labels), "expected": None,
                             "classes_off": {index: 0 for index in absent}})
    wrong = {index: counts.get(index, 0) for index in range(n_classes)
             if counts.get(index, 0) != ipc}
    expected = n_classes * ipc
    passed = not wrong and len(labels) == expected
    description = (f"{len(labels)} images = {ipc} per class × {n_classes} classes" if passed
                   else f"{len(labels)} images, expected {expected} ({ipc} per class); "
                        f"classes off: {wrong}")
    return CheckOutcome(passed, description, {"n_images": len(labels), "expected": expected,
                                              "classes_off": wrong})


def accuracy_floor(metrics_path: Path, arms: Sequence[str],
                   floors: Mapping[str, float]) -> CheckOutcome:
    """Every configured arm (`arms`, in report order) has a row in the report, and each arm with a
    floor has a mean test accuracy at least that floor.

    A configured arm the report lacks fails (a report written under other params, or an arm that
    fell out of it): looking only at the rows the report happens to have would pass it. An arm
    the run recorded as not built (`missing_arms`, with its reason) has no accuracy: it fails when
    it has a floor (it does not reach it) and is named either way. Arms without a floor are rows
    with floor None, named in the description as not floored. A floor on an arm that is not
    configured is a ValueError naming it (`check_arms` rejects it when the definitions are
    built; a run's overrides reach only here).
    """
    stray = sorted(set(floors) - set(arms))
    if stray:
        raise ValueError(f"eval_report.accuracy_floor names arms {stray} that are not configured; "
                         f"the configured arms are {list(arms)}")
    metrics = json.loads(metrics_path.read_text())
    reported = metrics["arms"]
    not_built = metrics.get("missing_arms") or {}
    absent = [arm for arm in arms if arm not in reported and arm not in not_built]
    rows: dict[str, dict] = {}
    for arm in arms:
        rows[arm] = {"accuracy": round(reported[arm]["accuracy_mean"], 4) if arm in reported
                     else None, "floor": floors.get(arm)}
        if arm in not_built:
            rows[arm]["not_built"] = not_built[arm]
    low = {arm: row for arm, row in rows.items() if row["floor"] is not None
           and arm not in absent and (row["accuracy"] is None or row["accuracy"] < row["floor"])}
    unfloored = [arm for arm, row in rows.items() if arm in reported and row["floor"] is None]
    problems = ([f"below the accuracy floor: {low}"] if low else [])
    problems += ([f"configured arms missing from {metrics_path.name}: {absent} (re-materialize "
                  "eval_report with these params)"] if absent else [])
    if problems:
        description = "; ".join(problems)
    else:
        description = "every arm with a floor reaches it: " + (", ".join(
            f"{arm} {row['accuracy']:.4f} ≥ {row['floor']}" for arm, row in rows.items()
            if row["floor"] is not None) or "none has a floor")
    if unfloored:
        description += f"; no floor set for {', '.join(unfloored)}"
    unbuilt_unfloored = [arm for arm in not_built if arm in rows and rows[arm]["floor"] is None]
    if unbuilt_unfloored:
        description += f"; not built: {', '.join(unbuilt_unfloored)}"
    return CheckOutcome(not problems, description,
                        {"arms": rows, "missing": absent, "no_floor": unfloored})
