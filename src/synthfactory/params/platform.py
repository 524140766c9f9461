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


class RayParams(Section):
    """Where and how the `ray` executor runs steps (see docs/scale-out-ray.md).

    `address` is what `ray.init` takes: `auto` (the cluster this machine belongs to, or
    RAY_ADDRESS), `local` (start a private one-node cluster for the run), `host:port` of a head
    node, or `ray://host:10001` (Ray Client). Every step is a Ray task that starts the step's
    process on a worker: a GPU step asks for as many `num_gpus` as it uses (its
    `synthfactory/devices` op tag: 1, or `runtime.devices` for DDP), plus `gpu_step_cpus` CPUs;
    any other step asks for `cpu_step_cpus` CPUs. `resources` are extra custom resources every
    step asks for (e.g. `{"synthfactory": 1}` to keep steps off nodes without the project).
    `working_dir` is the directory the step process starts in (a relative `store.root` is read
    from there): null is the directory the run started in, which must exist on every worker
    (a shared filesystem), or give an absolute path that does. `env` lists the variables passed
    from the run's process to each step (DAGSTER_HOME and SYNTHFACTORY_PARAMS always are).
    """

    address: str = "auto"
    cpu_step_cpus: float = Field(default=1.0, ge=0)
    gpu_step_cpus: float = Field(default=1.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    working_dir: str | None = None
    env: list[str] = Field(default_factory=list)
    # How often the run asks Ray whether a step's task is still alive: a worker that died
    # mid-step fails the step within about this many seconds.
    health_check_seconds: int = Field(default=5, gt=0)
    # When set, steps go to their nodes in a spread (not packed), so that a small backfill uses
    # every node's GPUs instead of filling the first node.
    spread: bool = True

    @field_validator("address")
    @classmethod
    def _known_address(cls, address: str) -> str:
        if address not in {"auto", "local"} and ":" not in address:
            raise ValueError(f"executor.ray.address {address!r} is not auto, local, host:port or "
                             "ray://host:port (e.g. 10.0.0.5:6379 or ray://head:10001)")
        return address


class ExecutorParams(Section):
    """Which Dagster executor runs the steps of a run: one process (`in_process`), a process
    per step (`multiprocess`, at most `max_concurrent` at once), a Kubernetes job per step
    (`k8s`, needs `pip install dagster-k8s`; see deploy/k8s/), or a Ray task per step (`ray`,
    needs `pip install 'synthfactory[ray]'`; see deploy/ray/ and docs/scale-out-ray.md)."""

    kind: Literal["in_process", "multiprocess", "k8s", "ray"] = "multiprocess"
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
    # kind ray only: the cluster and what each step asks it for. max_concurrent does not apply
    # (Ray queues the tasks that do not fit the cluster); the instance's gpu pool limit does.
    ray: RayParams = RayParams()

