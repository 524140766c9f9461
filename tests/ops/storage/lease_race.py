"""Processes racing for one lease (used by the lease tests on a local disk and on moto's S3).

`race(spec, path, trials)` starts two processes; in each trial both try to take the lease at the
same instant (a barrier), once (`wait=0`). A holder keeps it until the other has tried, so an
exclusive lease has exactly one holder per trial.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from synthfactory.ops.storage.locks import LeaseTimeout, lease


def make_fs(spec: dict[str, Any]) -> Any:
    """An fsspec filesystem from a picklable spec: {"protocol": "file"} or s3 options."""
    import fsspec

    options = {key: value for key, value in spec.items() if key != "protocol"}
    return fsspec.filesystem(spec["protocol"], **options)


def _contender(spec: dict[str, Any], path: str, trials: int, barrier: Any, results: Any,
               index: int) -> None:
    fs = make_fs(spec)
    for trial in range(trials):
        barrier.wait()
        try:
            with lease(fs, path, ttl=60, wait=0):
                results.put((trial, index, True))
                barrier.wait()  # hold it until the other contender has tried
        except LeaseTimeout:
            results.put((trial, index, False))
            barrier.wait()
        barrier.wait()  # both released (or failed) before the next trial starts


def race(spec: dict[str, Any], path: str, trials: int, timeout_s: float = 300) -> list[int]:
    """Holders per trial (a list of `trials` counts) for two spawned processes racing."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=timeout_s)
    results = context.Queue()
    workers = [context.Process(target=_contender, args=(spec, path, trials, barrier, results, i))
               for i in range(2)]
    for worker in workers:
        worker.start()
    holders = [0] * trials
    for _ in range(2 * trials):
        trial, _, got = results.get(timeout=timeout_s)
        holders[trial] += int(got)
    for worker in workers:
        worker.join(timeout=timeout_s)
        assert worker.exitcode == 0, f"a contender failed (exit code {worker.exitcode})"
    return holders
