"""Distillation cells: one (method, ipc, source) combination, named `<method>-ipc<N>-<source>`.

`whole` is the one cell without an ipc: every image of its source, evaluated by the same protocol
as the distilled sets (the whole-dataset row, the upper bound of DD-Ranking's HLR), named
`whole-<source>`: one per source, whatever `ipcs` holds."""

from __future__ import annotations

import re
from dataclasses import dataclass

METHODS = ("random", "herding", "kcenter", "dm", "dc", "mtt", "datm", "gm_init", "whole")
WHOLE = "whole"
LEARNED = ("dm", "dc", "mtt", "datm", "gm_init")
TRAJECTORY_METHODS = ("mtt", "datm")
SOURCES = ("filtered", "synthetic", "real")
_CELL = re.compile(r"^(?P<method>[a-z][a-z_]*)-ipc(?P<ipc>[1-9][0-9]*)-(?P<source>[a-z]+)$")
_WHOLE_CELL = re.compile(r"^whole-(?P<source>[a-z]+)$")


@dataclass(frozen=True)
class Cell:
    """One cell of the distillation table (`ipc` 0 for the `whole` cell: every image)."""

    method: str
    ipc: int
    source: str

    @property
    def key(self) -> str:
        """The partition key, e.g. `dm-ipc10-real`, or `whole-real`."""
        if self.method == WHOLE:
            return f"{WHOLE}-{self.source}"
        return f"{self.method}-ipc{self.ipc}-{self.source}"

    @property
    def learned(self) -> bool:
        """Whether the cell learns its images (as opposed to selecting samples)."""
        return self.method in LEARNED


def parse_cell(key: str) -> Cell:
    """`dm-ipc10-real` → Cell('dm', 10, 'real'), `whole-real` → Cell('whole', 0, 'real'); a
    bad key names the right form."""
    whole = _WHOLE_CELL.match(key)
    if whole is not None and whole["source"] in SOURCES:
        return Cell(WHOLE, 0, whole["source"])
    match = _CELL.match(key)
    if (match is None or match["method"] not in METHODS or match["method"] == WHOLE
            or match["source"] not in SOURCES):
        raise ValueError(f"cell {key!r} is not <method>-ipc<N>-<source> with method in "
                         f"{', '.join(METHODS)} and source in {', '.join(SOURCES)} "
                         "(e.g. dm-ipc10-real), or whole-<source>")
    return Cell(match["method"], int(match["ipc"]), match["source"])


def cells(methods: list[str], ipcs: list[int], sources: list[str]) -> list[Cell]:
    """Every combination, sources outermost, then methods, then ipc (the table's order); the
    `whole` method gives one cell per source (it has no ipc)."""
    return [Cell(method, 0 if method == WHOLE else ipc, source) for source in sources
            for method in methods for ipc in ([ipcs[0]] if method == WHOLE else ipcs)]


def trajectory_sources(table: list[Cell]) -> list[str]:
    """The sources that an `mtt` or `datm` cell distils (they need experts), in table order."""
    return list(dict.fromkeys(cell.source for cell in table if cell.method in TRAJECTORY_METHODS))


def expert_key(source: str, index: int) -> str:
    """The partition key of one expert, e.g. `real-expert-0` (disjoint from cell and shard keys)."""
    return f"{source}-expert-{index}"


_EXPERT = re.compile(r"^(?P<source>[a-z]+)-expert-(?P<index>0|[1-9][0-9]*)$")


def parse_expert(key: str) -> tuple[str, int]:
    """`real-expert-3` → ('real', 3); a bad key names the right form."""
    match = _EXPERT.match(key)
    if match is None or match["source"] not in SOURCES:
        raise ValueError(f"expert {key!r} is not <source>-expert-<k> with source in "
                         f"{', '.join(SOURCES)} (e.g. real-expert-0)")
    return match["source"], int(match["index"])


def expert_keys(table: list[Cell], experts: int) -> list[str]:
    """Every expert the table's trajectory cells need: `experts` per source, sources in order."""
    return [expert_key(source, index) for source in trajectory_sources(table)
            for index in range(experts)]
