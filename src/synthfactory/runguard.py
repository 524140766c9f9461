"""Runs that end: a time limit on every run, and pool slots that a dead step cannot keep.

Two Dagster facts this module works around (dagster 1.13):

- A step process of the multiprocess executor that dies before it reports the step's end (it
  raises while rebuilding the definitions from the params file, say) keeps its `gpu` pool slot:
  the run coordinator logs "finished without success or failure event" and never frees it. Another
  GPU step of the same run then waits for that slot forever (the run stays STARTED), and so does
  the next run's first GPU step.
- Instance run monitoring (`run_monitoring.max_runtime_seconds` in dagster_home/dagster.yaml and
  the per-run tag `dagster/max_runtime`) ends runs that the daemon launched; a run that the
  `synthfactory` CLI executes in its own process has no daemon watching it.

`RunGuard` watches the runs one CLI invocation starts (they carry its `INVOCATION_TAG`): it frees
the slot of a step that ended without a success or failure event, frees whatever slots a run
still holds when it ends, and interrupts a run that is past its time limit (SIGINT: Dagster
turns it into an orderly interruption of the run and its step processes). `stale_slots` and
`free_stale_slots` are what `synthfactory doctor` lists and frees: slots held by runs that are
finished, gone, or whose steps ended.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg

MAX_RUNTIME_TAG = "dagster/max_runtime"
INVOCATION_TAG = "synthfactory/invocation"
# What the multiprocess executor logs when a step process ended without the step's end event.
NO_END_EVENT = "finished without success or failure event"
_NO_END = re.compile(rf"Step (\S+) {NO_END_EVENT}")
# How often the guard looks at its runs.
POLL_S = 2.0
# After interrupting a run past its limit, how long its process may take to stop before the
# guard records the run as failed, frees its slots and exits the process.
STOP_GRACE_S = 60.0

_STEP_ENDS = {"STEP_SUCCESS", "STEP_FAILURE", "STEP_UP_FOR_RETRY"}


def runtime_tags(max_runtime_s: float | None) -> dict[str, str]:
    """The run tag that limits a run's duration (read by the daemon's run monitoring and by
    `RunGuard`); none when there is no limit."""
    if max_runtime_s is None:
        return {}
    if max_runtime_s <= 0:
        raise ValueError(f"max runtime {max_runtime_s!r} s: give a positive number of seconds")
    return {MAX_RUNTIME_TAG: str(int(max_runtime_s))}


@dataclass(frozen=True)
class StaleSlot:
    """A pool slot held by a run or step that will never free it, and why."""

    pool: str
    run_id: str
    step_key: str
    reason: str

    def describe(self) -> str:
        """`gpu: run 1a2b… step judge: <reason>`."""
        return f"{self.pool}: run {self.run_id} step {self.step_key}: {self.reason}"


def _steps_ended_without_event(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key → why, for steps of `run_id` that ended without a success or failure event (the
    engine said so, or the step's worker process is gone) and have no end event since."""
    ended, why, workers = set(), {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        message = entry.user_message or ""
        if event is not None and event.event_type_value in _STEP_ENDS and event.step_key:
            ended.add(event.step_key)
        elif event is not None and event.event_type_value == "STEP_WORKER_STARTED":
            pid = event.event_specific_data.metadata.get("pid") if event.event_specific_data else None
            if pid is not None and event.step_key:
                workers[event.step_key] = int(str(pid.value))
        found = _NO_END.search(message)
        if found:
            why.setdefault(found.group(1), "its step process ended without a success or failure "
                                           "event (it died before reporting the step's end)")
    for step, pid in workers.items():
        if step not in ended and step not in why and not _alive(pid):
            why[step] = f"its step process (pid {pid}) is gone without reporting the step's end"
    return {step: reason for step, reason in why.items() if step not in ended}


def _alive(pid: int) -> bool:
    """Whether a process of this host with `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_slots(instance: dg.DagsterInstance) -> list[StaleSlot]:
    """The pool slots claimed by runs that can no longer free them: a run that is gone or
    finished (Dagster frees those only when a daemon runs `free_slots_after_run_end_seconds`),
    or a step of a live run that ended without its end event."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    stale = []
    for pool in sorted(storage.get_concurrency_keys()):
        for slot in storage.get_concurrency_info(pool).claimed_slots:
            run = instance.get_run_by_id(slot.run_id)
            if run is None:
                reason = "its run no longer exists"
            elif run.is_finished:
                reason = f"its run ended ({run.status.value})"
            else:
                reason = _steps_ended_without_event(instance, slot.run_id).get(slot.step_key)
            if reason is not None:
                stale.append(StaleSlot(pool, slot.run_id, slot.step_key, reason))
    return stale


def free_stale_slots(instance: dg.DagsterInstance,
                     slots: list[StaleSlot] | None = None) -> list[StaleSlot]:
    """Free `slots` (default: every stale slot now); return those freed."""
    slots = stale_slots(instance) if slots is None else slots
    for slot in slots:
        instance.event_log_storage.free_concurrency_slot_for_step(slot.run_id, slot.step_key)
    return slots


class RunGuard:
    """Watches the runs tagged with this guard's `tags` (see the module docstring) from a
    background thread, while `watch()` is active."""

    def __init__(self, instance: dg.DagsterInstance, max_runtime_s: float | None,
                 poll_s: float = POLL_S, stop_grace_s: float = STOP_GRACE_S):
        self.instance = instance
        self.max_runtime_s = max_runtime_s
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s
        self.invocation = uuid.uuid4().hex
        self.freed: list[StaleSlot] = []
        self.timed_out: dict[str, float] = {}  # run id → when it was interrupted
        self._stop = threading.Event()

    @property
    def tags(self) -> dict[str, str]:
        """Tags for every run this guard watches: the invocation and the time limit."""
        return {INVOCATION_TAG: self.invocation, **runtime_tags(self.max_runtime_s)}

    def runs(self, finished: bool = False) -> list[Any]:
        """This invocation's runs that are in flight (or, with `finished`, all of them)."""
        filters = dg.RunsFilter(tags={INVOCATION_TAG: self.invocation})
        runs = self.instance.get_runs(filters=filters)
        return runs if finished else [run for run in runs if not run.is_finished]

    def check_once(self) -> None:
        """One look: free dead steps' slots, and interrupt a run past its limit."""
        for run in self.runs():
            for step, reason in _steps_ended_without_event(self.instance, run.run_id).items():
                slot = self._held(run.run_id, step)
                if slot is not None:
                    self.instance.event_log_storage.free_concurrency_slot_for_step(run.run_id, step)
                    self.freed.append(StaleSlot(slot, run.run_id, step, reason))
                    print(f"synthfactory: warning: freed the {slot} pool slot of step {step} "
                          f"(run {run.run_id}): {reason}", file=sys.stderr, flush=True)
            self._enforce_limit(run)

    def _held(self, run_id: str, step_key: str) -> str | None:
        """The pool in which `step_key` of `run_id` holds a slot, if any."""
        storage = self.instance.event_log_storage
        for pool in storage.get_concurrency_keys():
            for slot in storage.get_concurrency_info(pool).claimed_slots:
                if slot.run_id == run_id and slot.step_key == step_key:
                    return pool
        return None

    def _enforce_limit(self, run: Any) -> None:
        limit = run.tags.get(MAX_RUNTIME_TAG)
        record = self.instance.get_run_record_by_id(run.run_id)
        if limit is None or record is None or record.start_time is None:
            return
        elapsed = time.time() - record.start_time
        if elapsed <= float(limit):
            return
        interrupted = self.timed_out.get(run.run_id)
        if interrupted is None:
            self.timed_out[run.run_id] = time.time()
            print(f"synthfactory: error: run {run.run_id} has run {elapsed:.0f}s, past its time "
                  f"limit of {limit}s ({MAX_RUNTIME_TAG}; executor.max_runtime_s in the params, "
                  "--max-runtime on the command line): stopping it", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGINT)  # Dagster stops the run and its step processes
        elif time.time() - interrupted > self.stop_grace_s:
            # It did not stop (a step ignoring the interruption): end it for good.
            self.instance.report_run_failed(run, f"past its time limit of {limit}s and did not "
                                                 f"stop within {self.stop_grace_s:.0f}s")
            self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            print(f"synthfactory: error: run {run.run_id} did not stop within "
                  f"{self.stop_grace_s:.0f}s of its interruption: recorded as failed, its pool "
                  "slots freed, exiting", file=sys.stderr, flush=True)
            os._exit(1)

    def release_finished(self) -> list[str]:
        """Free every slot still held by this invocation's finished runs (a run that ended no
        longer needs any; without a daemon nobody else frees them). Returns the run ids."""
        freed = []
        for run in self.runs(finished=True):
            if run.is_finished and run.run_id in self.instance.event_log_storage.get_concurrency_run_ids():
                self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
                freed.append(run.run_id)
        return freed

    @contextmanager
    def watch(self) -> Iterator[RunGuard]:
        """Run the watcher thread for the block; on exit free what finished runs still hold."""
        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                self.check_once()

        thread = threading.Thread(target=loop, name="synthfactory run guard", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.release_finished()


def doctor_command(open_instance: Callable[[], dg.DagsterInstance], fix: bool) -> int:
    """List the pool slots held by runs that are no longer alive (and free them with `fix`).

    `synthfactory doctor`: `open_instance` opens the project's Dagster instance. Exit 0 when
    there are none (or all were freed), 1 when some are listed but not freed."""
    with open_instance() as instance:
        if instance.is_ephemeral:
            raise ValueError("doctor needs the persistent Dagster instance: run from the project "
                             "root (it has dagster_home/) or set DAGSTER_HOME")
        stale = stale_slots(instance)
        if not stale:
            print(f"no stale pool slots (instance {instance.root_directory})")
            return 0
        for slot in stale:
            print(f"stale slot: {slot.describe()}")
        if not fix:
            print(f"{len(stale)} stale slot(s): `synthfactory doctor --fix` frees them")
            return 1
        free_stale_slots(instance, stale)
        print(f"freed {len(stale)} stale slot(s)")
        return 0
