"""Runs that end: the pool-slot reproduction (a GPU step process that dies before reporting its
end, another GPU step of the run waiting for the slot), a run past its time limit, and
`synthfactory doctor` on a slot left by a finished run."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from synthfactory.automation import all_shards_tags
from synthfactory.cli import main
from synthfactory.definitions import build_definitions
from synthfactory.params import load_params
from synthfactory.runguard import RunGuard, stale_slots
from tests.support import PROJECT_ROOT

DIE_ENV = "SYNTHFACTORY_TEST_STEP_PROCESS_DIES"
LIMIT_S = 180


def gpu_job(params_file: str, *assets: str) -> dg.JobDefinition:
    """The GPU assets `assets` without their checks. In a step process (a multiprocessing child)
    with DIE_ENV set, loading fails, as an invalid params.yaml makes it fail: the process raises
    before the step reports anything."""
    if multiprocessing.parent_process() is not None and os.environ.get(DIE_ENV):
        raise RuntimeError(f"{params_file}: the definitions fail to load in the step process")
    defs = build_definitions(load_params(params_file))
    job = dg.define_asset_job("gpu_steps", selection=dg.AssetSelection.assets(*assets).without_checks())
    return dg.Definitions(assets=defs.assets, jobs=[job], resources=defs.resources,
                          executor=defs.executor).resolve_job_def("gpu_steps")


def _recon(params_file: Path, *assets: str) -> dg.ReconstructableJob:
    return dg.build_reconstructable_job("tests.platform.test_run_limits", "gpu_job",
                                        reconstructable_args=(str(params_file), *assets),
                                        reconstructor_working_directory=str(PROJECT_ROOT))


MULTIPROCESS = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}


def test_a_gpu_step_dying_before_its_first_event_frees_its_slot_and_the_run_ends(
        tiny_params_file: Path, _test_dagster_home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--params", str(tiny_params_file), "--select", "key:real_images"]) == 0
    keys = build_definitions(load_params(tiny_params_file)).get_assets_def(
        "synthetic_shards").partitions_def.get_partition_keys()
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        monkeypatch.setenv(DIE_ENV, "1")
        guard = RunGuard(instance, LIMIT_S, poll_s=0.5)
        started = time.monotonic()
        with guard.watch():  # two GPU steps, one pool slot: one waits for the other's
            result = dg.execute_job(_recon(tiny_params_file, "judge", "synthetic_shards"),
                                    instance, run_config=MULTIPROCESS,
                                    tags={**guard.tags, **all_shards_tags(keys)})
        ended = time.monotonic() - started
        with capsys.disabled():
            print(f"\npool-slot reproduction: the run ended ({result.dagster_run.status.value}) "
                  f"after {ended:.1f}s (limit {LIMIT_S}s); slots freed: "
                  f"{[slot.describe() for slot in guard.freed]}")
        assert not result.success and ended < LIMIT_S
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
        # The first dead step's slot was held (the bug: the other GPU step waited for it) and
        # the guard freed it; the second one's is freed by the guard or, when the run ended
        # before its next look, as the run ended.
        freed = [slot.step_key for slot in guard.freed]
        assert freed and set(freed) <= {"judge", "synthetic_shards"}, freed
        assert result.run_id not in instance.event_log_storage.get_concurrency_run_ids()
        assert "pool slot of step" in capsys.readouterr().err

        monkeypatch.delenv(DIE_ENV)  # the next run's GPU step gets the slot and runs
        following = dg.execute_job(_recon(tiny_params_file, "judge"), instance,
                                   run_config=MULTIPROCESS)
        assert following.success
        assert any(e.event_type_value == "STEP_START" and e.step_key == "judge"
                   for e in following.all_events)


@dg.op
def slow_step() -> None:
    for _ in range(600):  # a minute, unless interrupted
        time.sleep(0.1)


@dg.job
def slow_job() -> None:
    slow_step()


def test_a_run_past_its_time_limit_is_stopped(_test_dagster_home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        guard = RunGuard(instance, 3, poll_s=0.5)
        started = time.monotonic()
        with guard.watch():
            result = slow_job.execute_in_process(instance=instance, tags=guard.tags,
                                                 raise_on_error=False)
        ended = time.monotonic() - started
    assert not result.success and ended < 30, ended
    assert list(guard.timed_out) == [result.run_id]
    assert "past its time limit of 3s" in capsys.readouterr().err


def test_doctor_lists_and_frees_a_slot_of_a_finished_run(_test_dagster_home: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        run = instance.create_run_for_job(slow_job)
        instance.event_log_storage.set_concurrency_slots("gpu", 1)
        assert instance.event_log_storage.claim_concurrency_slot("gpu", run.run_id,
                                                                 "slow_step").is_claimed
        instance.report_run_failed(run)  # ended without freeing it (no daemon runs here)
        assert [slot.step_key for slot in stale_slots(instance)] == ["slow_step"]
    assert main(["doctor"]) == 1
    assert f"stale slot: gpu: run {run.run_id} step slow_step: its run ended" in capsys.readouterr().out
    assert main(["doctor", "--fix"]) == 0
    assert main(["doctor"]) == 0
    with dg.DagsterInstance.from_config(str(_test_dagster_home)) as instance:
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
