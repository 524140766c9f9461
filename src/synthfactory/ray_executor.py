"""`executor.kind: ray`: every step of a run is a Ray task on a cluster.

Why our own executor and not dagster-ray's (0.4.8, which accepts dagster 1.13): its executor
submits each step as a Ray *Job* through the Job Submission API, which is served by the Ray
dashboard. A `pip install ray` cluster runs the dashboard in minimal mode without that API (we
checked: `JobSubmissionClient` cannot connect), so it needs `ray[default]` and a dashboard on
every head, and a job's entrypoint is a driver of its own rather than a task with the step's
GPUs. A task is the unit Ray schedules with `num_gpus` and gives CUDA_VISIBLE_DEVICES to, on any
cluster that `ray start` made (a laptop, a Slurm allocation, KubeRay), without the dashboard.

How a step runs: Dagster's step-delegating executor (the same machinery as dagster-k8s's and
dagster-docker's executors) calls `RayStepHandler.launch_step`, which submits `_run_step` as a
Ray task asking for the step's resources. On the worker the task starts the ordinary
`dagster api execute_step` process with the step's serialized arguments, the instance reference
in them (the Dagster instance must be reachable from the workers: Postgres, or a DAGSTER_HOME on
a shared filesystem) and the worker's CUDA_VISIBLE_DEVICES. The step process writes its events
to the instance as it would under the multiprocess executor; the run's process reads them.
A step that raises fails with its own error; a task whose worker died (killed, out of memory,
node lost) is found by the health check and fails the step with Ray's error and the last lines
the step printed. Ray never retries a task (max_retries=0): retries are Dagster's to decide.
The step process dies with its worker (PR_SET_PDEATHSIG), so a killed worker leaves no orphan
writing into the store; what it had half-written stays in a temporary sibling, never under a
finished name (the store's atomic publishing).

`ray` is imported when a run starts on this executor, never when the definitions load.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)

from synthfactory.devices import ARBITER_ENV, DEVICES_TAG, RAY_NODE_ENV, RAY_WORKER_ENV

if TYPE_CHECKING:
    import ray

# Always passed from the run's process to the step's: where the instance and the params are.
ALWAYS_PASSED_ENV = ("DAGSTER_HOME", "SYNTHFACTORY_PARAMS")
STEP_KEY_ENV = "SYNTHFACTORY_STEP_KEY"
# How many lines of a step's output a failure message quotes.
TAIL_LINES = 40
# A task that ended while its step had not reported an end: the step's own failure event may be
# on its way to the event log; it is a health failure only after this grace.
ENDED_GRACE_SECONDS = 3.0
# Runs fanned out over threads share one connection: the first one makes it.
_CONNECT_LOCK = threading.Lock()

_CONFIG_SCHEMA = {
    "address": dg.Field(str, default_value="auto"),
    "cpu_step_cpus": dg.Field(float, default_value=1.0),
    "gpu_step_cpus": dg.Field(float, default_value=1.0),
    "resources": dg.Field(dg.Permissive(), default_value={}),
    "working_dir": dg.Field(dg.Noneable(str), default_value=None),
    "env": dg.Field([str], default_value=[]),
    "health_check_seconds": dg.Field(int, default_value=5),
    "spread": dg.Field(bool, default_value=True),
    "max_concurrent": dg.Field(dg.Noneable(int), default_value=None),
}


@dg.executor(name="ray", config_schema=_CONFIG_SCHEMA,
             requirements=dg.multiple_process_executor_requirements())
def ray_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Runs each step as a Ray task (see the module docstring); `executor.ray` in params.yaml
    is its config."""
    config = dict(init_context.executor_config)
    return StepDelegatingExecutor(
        RayStepHandler(config),
        retries=RetryMode.DISABLED,
        max_concurrent=config.get("max_concurrent"),
        check_step_health_interval_seconds=config["health_check_seconds"],
    )


def connect(address: str) -> None:
    """`ray.init` once per process (the run's), with a message that says what to do when there
    is no cluster or no ray."""
    try:
        import ray
    except ImportError:
        raise ValueError("executor.kind 'ray' needs ray: pip install 'synthfactory[ray]' "
                         "(or set executor.kind to multiprocess)") from None
    with _CONNECT_LOCK:
        if not ray.is_initialized():
            _init(ray, address)


def _init(ray: Any, address: str) -> None:
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=None if address == "auto" and os.environ.get("RAY_ADDRESS")
                     else address, log_to_driver=False)
    except ConnectionError as error:
        raise ValueError(f"executor.ray.address {address!r}: no Ray cluster there ({error}); "
                         "start one (`ray start --head`, deploy/ray/) or set "
                         "executor.ray.address: local") from None


def step_resources(tags: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    """The Ray task options of a step: GPU steps (a `synthfactory/devices` op tag) ask for that
    many GPUs, every step for its CPUs and the configured custom resources."""
    devices = int(tags.get(DEVICES_TAG, 0))
    options: dict[str, Any] = {
        "num_gpus": devices,
        "num_cpus": config["gpu_step_cpus"] if devices else config["cpu_step_cpus"],
        "max_retries": 0,  # Dagster decides retries; a dead worker fails the step
    }
    if config["resources"]:
        options["resources"] = dict(config["resources"])
    if config["spread"]:
        options["scheduling_strategy"] = "SPREAD"
    return options


class RayStepHandler(StepHandler):
    """Launches, watches and cancels the Ray task of each step."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self._config = config
        self._tasks: dict[str, ray.ObjectRef] = {}
        self._ended: dict[str, float] = {}  # step key → when its task was first seen ended

    @property
    def name(self) -> str:
        return "RayStepHandler"

    @staticmethod
    def _step_key(context: StepHandlerContext) -> str:
        keys = context.execute_step_args.step_keys_to_execute
        if not keys or len(keys) != 1:
            raise ValueError(f"the ray executor runs one step per task, got {keys}")
        return keys[0]

    def _task_id(self, context: StepHandlerContext) -> str:
        return f"{context.execute_step_args.run_id}:{self._step_key(context)}"

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        """Submit the step's task; its process starts when Ray has its resources free."""
        import ray

        connect(self._config["address"])
        step_key = self._step_key(step_handler_context)
        args = step_handler_context.execute_step_args
        options = step_resources(dict(step_handler_context.step_tags[step_key]), self._config)
        env = {item["name"]: item["value"] for item in args.get_command_env()}
        for name in (*ALWAYS_PASSED_ENV, *self._config["env"]):
            if name in os.environ:
                env[name] = os.environ[name]
        env[STEP_KEY_ENV] = step_key
        command = [sys.executable, "-m", "dagster", "api", "execute_step"]
        working_dir = self._config["working_dir"] or os.getcwd()
        ref = ray.remote(_run_step).options(name=f"dagster-step:{step_key}", **options).remote(
            command, env, working_dir)
        self._tasks[self._task_id(step_handler_context)] = ref
        yield DagsterEvent.step_worker_starting(
            step_handler_context.get_step_context(step_key),
            message=f'Executing step "{step_key}" as a Ray task ({options["num_gpus"]} GPU, '
                    f'{options["num_cpus"]} CPU).',
            metadata={"ray_task": dg.MetadataValue.text(ref.task_id().hex()),
                      "num_gpus": options["num_gpus"]},
        )

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        """Unhealthy when the step's task died (its worker was killed, its node lost) or ended
        without the step reporting an end (after a short grace for the step's last events)."""
        import ray

        task_id = self._task_id(step_handler_context)
        ref = self._tasks.get(task_id)
        if ref is None:
            return CheckStepHealthResult.unhealthy(
                f"no Ray task is known for step {self._step_key(step_handler_context)} (the run's "
                "process was restarted?)")
        done, _ = ray.wait([ref], timeout=0)
        if not done:
            return CheckStepHealthResult.healthy()
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as error:  # the task never finished: a dead worker
            return CheckStepHealthResult.unhealthy(
                f"its Ray task failed: {type(error).__name__}: {_first_lines(str(error))}")
        first_seen = self._ended.setdefault(task_id, time.monotonic())
        if time.monotonic() - first_seen < ENDED_GRACE_SECONDS:
            return CheckStepHealthResult.healthy()
        return CheckStepHealthResult.unhealthy(
            f"its process exited with code {outcome['returncode']} on Ray node "
            f"{outcome['node_id'][:12]} without reporting an end; last output:\n{outcome['tail']}")

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        """Cancel the step's task (force: the worker and the step process under it end)."""
        import ray

        step_key = self._step_key(step_handler_context)
        ref = self._tasks.pop(self._task_id(step_handler_context), None)
        yield DagsterEvent.engine_event(
            step_handler_context.get_step_context(step_key),
            message=f"Cancelling the Ray task of step {step_key}",
            event_specific_data=EngineEventData(),
        )
        if ref is not None:
            ray.cancel(ref, force=True)


def _first_lines(text: str, count: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:count]) + ("\n…" if len(lines) > count else "")


def _die_with_parent() -> None:
    """In the step process (Linux): receive SIGKILL when the Ray worker that started it dies,
    so a killed worker never leaves a step writing on."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run_step(command: list[str], env: dict[str, str], working_dir: str) -> dict[str, Any]:
    """The Ray task: run the step's process on this worker; return its exit code and the tail
    of its output. Runs on the worker, so it imports ray there."""
    import ray

    context = ray.get_runtime_context()
    node_id, worker_id = context.get_node_id(), context.get_worker_id()
    step_env = {**os.environ, **env, ARBITER_ENV: "ray", RAY_NODE_ENV: node_id,
                RAY_WORKER_ENV: worker_id}
    if not os.path.isdir(working_dir):
        raise FileNotFoundError(f"executor.ray.working_dir {working_dir!r} does not exist on Ray "
                                f"node {node_id[:12]}: put the project on a filesystem that "
                                "every node mounts, or set executor.ray.working_dir")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    with subprocess.Popen(command, env=step_env, cwd=working_dir, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, preexec_fn=preexec) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            sys.stdout.write(line)  # into the worker's log (ray logs), for the whole story
        returncode = process.wait()
    return {"returncode": returncode, "tail": "".join(tail), "node_id": node_id,
            "worker_id": worker_id, "pid": process.pid}
