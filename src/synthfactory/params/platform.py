"""How the graph runs: `automation` (schedule, sensor, eager) and `executor`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from synthfactory.params.base import Section


class ScheduleParams(Section):
    """The schedule that rebuilds the whole graph (off unless `enabled`)."""

    cron: str = "0 3 * * *"
    enabled: bool = False
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError(f"automation.schedule.cron {cron!r} must have 5 fields "
                             "(minute hour day month weekday), e.g. '0 3 * * *'")
        return cron


class SensorParams(Section):
    """The sensor that starts a run when the class list or the prompt config changes."""

    enabled: bool = True
    interval_seconds: int = Field(default=30, ge=5)


class AutomationParams(Section):
    """Schedules, sensors and declarative automation (`eager`: downstream assets refresh when
    their upstream data changes)."""

    schedule: ScheduleParams = ScheduleParams()
    sensor: SensorParams = SensorParams()
    eager: bool = True


class ExecutorParams(Section):
    """Which Dagster executor runs the steps of a run: one process (`in_process`), a process
    per step (`multiprocess`, at most `max_concurrent` at once), or a Kubernetes job per step
    (`k8s`, needs `pip install dagster-k8s`; see deploy/k8s/)."""

    kind: Literal["in_process", "multiprocess", "k8s"] = "multiprocess"
    max_concurrent: int = Field(default=2, gt=0)
    # The time limit of every run (the `dagster/max_runtime` tag of the CLI's runs and of the
    # schedule's and sensor's backfills): a run still going after this many seconds is stopped
    # and fails, so a hung step cannot hold the gpu pool forever. `synthfactory run
    # --max-runtime S` overrides it for one invocation; null leaves runs to the instance's
    # `run_monitoring.max_runtime_seconds` (dagster_home/dagster.yaml, 24 h).
    max_runtime_s: float | None = Field(default=12 * 3600, gt=0)
    # kind k8s only: the rest of dagster-k8s' `k8s_job_executor` config (job_namespace,
    # env_secrets, step_k8s_config, …), checked against its schema when the executor is built.
    k8s: dict[str, Any] = Field(default_factory=dict)

