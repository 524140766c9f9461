"""Which executor runs a run's steps, from `executor:` in params.yaml; and the GPU op tags.

`ray` runs each step as a task on a Ray cluster (`synthfactory.ray_executor`, needs
`pip install 'synthfactory[ray]'`): GPU steps ask Ray for their GPUs.

`multiprocess` (the default) starts a process per step, at most `max_concurrent` at once; steps
in the `gpu` pool additionally wait for a slot of the instance's pool limit (dagster_home/
dagster.yaml). `k8s` runs each step as a Kubernetes job (dagster-k8s, an optional dependency:
`pip install dagster-k8s`); the GPU assets carry `GPU_OP_TAGS`, which ask Kubernetes for one GPU.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from synthfactory.devices import DEVICES_TAG
from synthfactory.params import ExecutorParams

# dagster-k8s reads `dagster-k8s/config` to build the step's pod: one NVIDIA GPU per GPU step.
# `synthfactory/devices` is how many devices the step uses: the runtime resource leases that
# many on a multi-GPU machine, the Ray executor asks Ray for that many `num_gpus`.
GPU_OP_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
    DEVICES_TAG: "1",
}


def gpu_op_tags(devices: int) -> dict[str, Any]:
    """The op tags of a step that uses `devices` GPUs (a DDP classifier): its pod asks for that
    many, and so does its Ray task and its device lease."""
    if devices == 1:
        return GPU_OP_TAGS
    limits = {"nvidia.com/gpu": str(devices)}
    return {"dagster-k8s/config": {"container_config": {"resources": {"limits": limits}}},
            DEVICES_TAG: str(devices)}


def build_executor(config: ExecutorParams) -> dg.ExecutorDefinition:
    """The executor definition for `executor.kind`; `k8s` needs dagster-k8s installed."""
    if config.kind == "in_process":
        return dg.in_process_executor
    if config.kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": config.max_concurrent})
    if config.kind == "ray":
        # deferred: the step-delegating machinery it builds on costs ~0.1 s of every
        # definitions load, and only Ray runs need it (ray itself is imported later still,
        # when a run starts on it)
        from synthfactory.ray_executor import ray_executor

        return ray_executor.configured(config.ray.model_dump())
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise ValueError("executor.kind 'k8s' needs dagster-k8s: pip install 'dagster-k8s>=0.29,<0.30' "
                         "(or set executor.kind to multiprocess)") from None
    from dagster._config import process_config  # no public validator for executor config

    k8s_config = {"max_concurrent": config.max_concurrent, **config.k8s}
    checked = process_config(k8s_job_executor.config_schema.config_type, k8s_config)
    if not checked.success:
        problems = "; ".join(error.message for error in checked.errors)
        raise ValueError(f"executor.k8s {config.k8s!r} is not valid k8s_job_executor config: {problems} "
                         "(see deploy/k8s/params.yaml for a working example)")
    return k8s_job_executor.configured(k8s_config)
