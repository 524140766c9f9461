"""Whether the user's data can answer the question at all, and where the answer will be weak.

Refusals (a `ValueError` naming the value and the fix; the CLI exits 2) come before any work:

- fewer than `MIN_CLASSES` classes: a one-class "classification" is 100% accurate and means
  nothing;
- a class with fewer train, validation or test images than the run needs (`MIN_PER_SPLIT`): it
  could not be learned, chosen on, or measured;
- with the `retrieved` arm, a `retrieval.pool` that is missing or holds no image file
  (`preflight_pool`): the arm would have nothing to retrieve from.

Per-class counts are checked twice: by `source_counts` + `split_counts` before anything is
decoded (the CLI's preflight: files are counted, not opened, so it takes seconds on any folder),
and by `real_images` on the images that actually decoded (a folder of corrupt files passes the
first count and fails the second). Both go through `check_split_counts`, so they agree on the
minimum and on the message.

Warnings (`class_size_warnings`) do not stop a run; the report shows them beside the numbers they
weaken: a class more than `IMBALANCE_RATIO` times larger than another, or one with fewer than
`MIN_TEST_FOR_ACCURACY` test images (its per-class accuracy moves by more than 5 points per
image: noise).

`TooFewImages` is the error of a *set* that cannot be made from what it was given (a class the
filter emptied, `ipc` above what a class kept). It is not a refusal: the asset that builds an
evaluation arm catches it and records the arm as not built, and every other arm and the report
are still made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from synthfactory.ops.data.imagefolder import IMAGE_EXTENSIONS, UNDECODABLE_EXTENSIONS, is_hidden
from synthfactory.ops.data.splits import carve_validation, stratified_split
from synthfactory.ops.data.webdataset import resolve_shards, webdataset_label_counts

MIN_CLASSES = 2
# What every class needs in each split: one image to learn from (generator, judge, real arm), one
# to choose on (every threshold and recipe reads validation), one to be measured on. A run that
# distils the real images at ipc N needs N train images per class (`minimums`).
MIN_PER_SPLIT = {"train": 1, "val": 1, "test": 1}
SPLIT_WORDS = {"train": "train", "val": "validation", "test": "test"}
IMBALANCE_RATIO = 10.0
MIN_TEST_FOR_ACCURACY = 20

Counts = dict[str, dict[str, int]]  # split -> class name -> images


class TooFewImages(ValueError):
    """A set cannot be built: a class has fewer images than the set asks for.

    The message names the class, what it has, what was asked and the fix. An asset building an
    evaluation arm records the arm as not built with this message instead of failing the run.
    """


def check_every_class(labels: np.ndarray, class_names: Sequence[str], what: str,
                      fix: str) -> None:
    """Raise `TooFewImages` when a class has no image in a set (`what`), naming them and `fix`.

    A set without some class cannot stand for the question: its classifier could never predict
    that class, so its accuracy would not compare with the other arms'.
    """
    present = set(np.asarray(labels).tolist())
    absent = [name for index, name in enumerate(class_names) if index not in present]
    if absent:
        shown = ", ".join(repr(name) for name in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise TooFewImages(f"{what} has no image of class(es) {shown}{more}: {fix}")


def check_class_count(class_names: Sequence[str], where: str) -> None:
    """Refuse fewer than `MIN_CLASSES` classes; `where` names the setting the classes came from."""
    if len(class_names) < MIN_CLASSES:
        shown = ", ".join(repr(name) for name in class_names) or "none"
        raise ValueError(f"{where} gives {len(class_names)} class ({shown}): a classification "
                         f"needs at least {MIN_CLASSES} classes (with one, every arm scores "
                         "100% and the answer means nothing): add a class")


def source_counts(source: str, root: str | None, class_names: Sequence[str]) -> dict[str, int]:
    """Images per class of an image folder or WebDataset, counted without decoding any image.

    An image folder counts the non-empty, non-hidden files with an image extension under each
    class folder; a WebDataset the samples with an image and a label (only the small label members are read).
    Both are upper bounds of what decodes. `digits` is not counted (its classes are fixed and
    large): an empty dict.
    """
    if source == "imagefolder":
        counts = {}
        for name in class_names:
            folder = Path(str(root)) / name
            counts[name] = sum(1 for path in folder.rglob("*") if path.is_file()
                               and not is_hidden(path, folder)
                               and path.suffix.lower() in IMAGE_EXTENSIONS
                               and path.stat().st_size > 0) if folder.is_dir() else 0
        return counts
    if source == "webdataset":
        by_label = webdataset_label_counts(str(root), list(class_names))
        return {name: by_label.get(label, 0) for label, name in enumerate(class_names)}
    return {}


def split_counts(per_class: Mapping[str, int], test_fraction: float, val_fraction: float,
                 seed: int, test_per_class: Mapping[str, int] | None = None) -> Counts:
    """The train/val/test counts per class that `real_images` will make from these totals.

    Runs the very split functions `real_images` runs (their per-class sizes depend only on the
    class sizes), so the preflight and the asset cannot disagree. With `test_per_class` (the
    user's own test set), every image of `per_class` is train (before validation is carved).
    """
    names = list(per_class)
    labels = np.repeat(np.arange(len(names)), [per_class[name] for name in names])
    if test_per_class is None:
        train, test = stratified_split(labels, test_fraction, seed)
        test_counts = Counter(labels[test].tolist())
    else:
        train = np.arange(len(labels))
        test_counts = Counter({index: test_per_class.get(name, 0)
                               for index, name in enumerate(names)})
    train, val = carve_validation(labels, train, val_fraction, seed)
    return {"train": _per_name(labels[train], names), "val": _per_name(labels[val], names),
            "test": {name: int(test_counts.get(index, 0)) for index, name in enumerate(names)}}


def minimums(train_needed: int = 1) -> dict[str, int]:
    """Images each class needs per split: `MIN_PER_SPLIT`, with `train_needed` train images."""
    return {**MIN_PER_SPLIT, "train": max(MIN_PER_SPLIT["train"], train_needed)}


def minimum_images(test_fraction: float, val_fraction: float, seed: int,
                   own_test_set: bool, train_needed: int = 1) -> int:
    """The fewest images a class needs (in `root`) to meet `minimums` after the splits."""
    need = minimums(train_needed)
    for total in range(1, 100_000):
        counts = split_counts({"c": total}, test_fraction, val_fraction, seed,
                              {"c": need["test"]} if own_test_set else None)
        if all(counts[split]["c"] >= count for split, count in need.items()):
            return total
    raise ValueError(f"no class size meets {need} with test_fraction {test_fraction} "
                     f"and val_fraction {val_fraction}")


def check_split_counts(counts: Counts, where: str, minimum_total: int,
                       train_needed: int = 1, hint: str = "") -> None:
    """Refuse when a class has fewer images in a split than `minimums(train_needed)`; one line.

    `where` names the data ("real_images.root 'photos'"); `minimum_total` is how many images a
    class needs before the split (from `minimum_images`), stated in the fix; `hint`, when
    given, ends the message (e.g. files in a format that cannot be read).
    """
    required = minimums(train_needed)
    short = {name: {split: counts[split].get(name, 0) for split in required}
             for name in counts["train"]
             if any(counts[split].get(name, 0) < need for split, need in required.items())}
    if not short:
        return
    shown = "; ".join(f"{name!r}: " + ", ".join(f"{row[split]} {SPLIT_WORDS[split]}"
                                               for split in required)
                      for name, row in list(short.items())[:5])
    more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
    need = ", ".join(f"{count} {SPLIT_WORDS[split]}" for split, count in required.items())
    why = (f" (distilled_set.ipcs up to {train_needed} with source real)"
           if train_needed > 1 else "")
    raise ValueError(f"{len(short)} class(es) of {where} have too few images after the "
                     f"splits ({shown}{more}): every class needs at least {need} image{why} "
                     f"({minimum_total} images per class before the split, with these "
                     "test_fraction and val_fraction): add images to those classes or remove "
                     f"them{hint}")


def preflight_counts(source: str, root: str | None, test_root: str | None,
                     class_names: Sequence[str], test_fraction: float, val_fraction: float,
                     seed: int, train_needed: int = 1) -> Counts | None:
    """Count the source's images per class and split without decoding, and refuse too few.

    What the CLI runs before materializing `real_images`: seconds on any folder, and the same
    check `real_images` repeats on the images that decode. None for `digits` (nothing to count).
    """
    totals = source_counts(source, root, class_names)
    if not totals:
        return None
    tests = source_counts(source, test_root, class_names) if test_root else None
    counts = split_counts(totals, test_fraction, val_fraction, seed, tests)
    check_split_counts(counts, describe_source(source, root, test_root),
                       minimum_images(test_fraction, val_fraction, seed, tests is not None,
                                      train_needed), train_needed,
                       hint=_undecodable_hint(source, [root, test_root], class_names))
    return counts


def _undecodable_hint(source: str, roots: Sequence[str | None],
                      class_names: Sequence[str]) -> str:
    """'; N files are HEIC ...' when class folders hold images Pillow cannot decode (a folder
    of iPhone photos), else ''."""
    if source != "imagefolder":
        return ""
    found: Counter[str] = Counter()
    for root in filter(None, roots):
        for name in class_names:
            folder = Path(str(root)) / name
            if folder.is_dir():
                found.update(UNDECODABLE_EXTENSIONS[path.suffix.lower()]
                             for path in folder.rglob("*")
                             if path.suffix.lower() in UNDECODABLE_EXTENSIONS
                             and not is_hidden(path, folder))
    if not found:
        return ""
    kinds = "/".join(sorted(found))
    return (f"; {sum(found.values())} file(s) under the class folders are {kinds} images, which "
            "Pillow cannot decode: convert them to JPEG or PNG")


def preflight_pool(pool: str) -> int:
    """Count the retrieval pool's image files (an image folder) or shards (WebDataset) without
    decoding any; refuse a pool that is missing or empty. The files that decode are counted
    again by `retrieved_set` (ops/data/pool.py), which refuses a pool where none does."""
    path = Path(pool)
    fix = "point retrieval.pool at unlabeled images, or remove retrieved from classifiers.arms"
    if path.is_dir() and not any(path.glob("*.tar")):
        found = sum(1 for file in path.rglob("*") if file.is_file() and not is_hidden(file, path)
                    and file.suffix.lower() in IMAGE_EXTENSIONS and file.stat().st_size > 0)
        if not found:
            raise ValueError(f"retrieval.pool {pool!r} holds no image file: {fix}")
        return found
    try:
        return len(resolve_shards(pool))
    except FileNotFoundError as error:
        problem = str(error).split(": ", 1)[-1].split(";", 1)[0]
        raise ValueError(f"retrieval.pool {pool!r}: {problem}: {fix}") from None


def counts_of(labels: np.ndarray, splits: Mapping[str, np.ndarray],
              class_names: Sequence[str]) -> Counts:
    """Images per split and class, from the dataset's labels and each split's indices."""
    return {split: _per_name(labels[indices], list(class_names))
            for split, indices in splits.items()}


def describe_source(source: str, root: str | None, test_root: str | None = None) -> str:
    """How a refusal names the user's data: the setting that points at it."""
    if source == "digits":
        return "the digits dataset"
    return f"real_images.root {root!r}" + (f" + test_root {test_root!r}" if test_root else "")


def class_size_warnings(counts: Counts) -> list[str]:
    """One line per weakness of the class sizes: imbalance (train or test) and tiny test classes."""
    warnings = []
    for split in ("train", "test"):
        sizes = counts.get(split, {})
        if not sizes or min(sizes.values()) == 0:
            continue
        largest, smallest = max(sizes, key=sizes.__getitem__), min(sizes, key=sizes.__getitem__)
        ratio = sizes[largest] / sizes[smallest]
        if ratio > IMBALANCE_RATIO:
            warnings.append(f"imbalanced {SPLIT_WORDS[split]} split: class {largest!r} has "
                            f"{sizes[largest]} images, {smallest!r} {sizes[smallest]} "
                            f"({ratio:.1f}x, more than {IMBALANCE_RATIO:g}x): classifiers lean "
                            "to the large classes and mean accuracy hides the small ones")
    small = small_test_classes(counts)
    if small:
        shown = ", ".join(f"{name!r} ({count})" for name, count in list(small.items())[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        warnings.append(f"{len(small)} class(es) have fewer than {MIN_TEST_FOR_ACCURACY} test "
                        f"images: {shown}{more}; their per-class accuracy is noise (one image "
                        f"moves it by more than {100 / MIN_TEST_FOR_ACCURACY:g} points)")
    return warnings


def small_test_classes(counts: Counts) -> dict[str, int]:
    """Classes with fewer than `MIN_TEST_FOR_ACCURACY` test images, with their test counts."""
    return {name: count for name, count in counts.get("test", {}).items()
            if count < MIN_TEST_FOR_ACCURACY}


def _per_name(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = Counter(labels.tolist())
    return {name: int(counts.get(index, 0)) for index, name in enumerate(names)}
