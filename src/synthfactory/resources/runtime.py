"""The torch runtime: device, dtype, seed and threads as explicit config."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from synthfactory import devices as leases

if TYPE_CHECKING:
    import torch


class TorchRuntime(dg.ConfigurableResource):
    """Where and how tensors are computed.

    `device` is `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:<index>`; `threads`
    caps torch's CPU threads (null keeps torch's default); `deterministic` asks torch for
    deterministic kernels wherever it has them (see `ops.tensors.use_deterministic_algorithms`:
    CUDA results are then reproducible except where an op has no deterministic kernel). torch
    is imported only when a step starts, never when the definitions load.

    `devices` > 1 trains the classifiers with DistributedDataParallel, one process per device
    (torchrun from the step; CUDA with NCCL, or CPU processes with gloo). Training data larger
    than `in_memory_mb` (decoded uint8 images) — and every set under DDP — streams from its
    shards through `workers` DataLoader processes per device with a `shuffle_buffer` of samples.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, gt=0)
    deterministic: bool = True
    devices: int = Field(default=1, gt=0)
    workers: int = Field(default=2, ge=0)
    shuffle_buffer: int = Field(default=5000, ge=0)
    in_memory_mb: float = Field(default=512.0, ge=0)
    visible_devices: list[int] | None = None
    lease_dir: str | None = None
    lease_timeout_s: float = Field(default=3600.0, gt=0)

    _device: str | None = PrivateAttr(default=None)
    _lease: leases.Lease | None = PrivateAttr(default=None)
    _step_device: str | None = PrivateAttr(default=None)
    _recorded_steps: set[str] = PrivateAttr(default_factory=set)

    @field_validator("visible_devices")
    @classmethod
    def _distinct_indices(cls, indices: list[int] | None) -> list[int] | None:
        if indices is not None and (not indices or len(set(indices)) != len(indices)
                                    or min(indices) < 0):
            raise ValueError(f"runtime.visible_devices {indices!r} must be distinct device "
                             "indices >= 0, e.g. [0, 1] (or null: every GPU torch sees)")
        return indices

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        base, _, index = device.partition(":")
        if base not in {"auto", "cpu", "cuda"} or (index and (base != "cuda" or not index.isdigit())):
            raise ValueError(f"runtime.device {device!r} is not one of auto, cpu, cuda, cuda:<index>")
        return device

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Resolve `auto`, check that the device exists, apply the thread cap and the
        deterministic mode (before the step's first CUDA call)."""
        # deferred: torch, and tensors (which imports it): resources load with the code location
        import torch

        from synthfactory.ops.tensors import use_deterministic_algorithms

        self._device = resolve_device(self.device)
        use_deterministic_algorithms(self.deterministic)
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Release the step's device lease (the step process ends here with the multiprocess
        executor; in-process, the run does)."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    @property
    def torch_device(self) -> torch.device:
        """The resolved device; inside a GPU step, the device leased for it (see the class
        docstring), recorded once per step in its materialization metadata."""
        import torch

        step = _current_step()
        if step is None:
            return torch.device(self._device or resolve_device(self.device))
        context, wanted = step
        if wanted == 0:  # not a GPU step: nothing to lease or record
            return torch.device(self._device or resolve_device(self.device))
        if self._lease is not None and len(self._lease.ids) != wanted:
            # In-process runs share one resource: a DDP step after a one-GPU step re-leases.
            self._lease.release()
            self._lease, self._step_device = None, None
        if self._step_device is None:
            self._step_device = self._assign(wanted, context)
        self._record(context, wanted)
        return torch.device(self._step_device)

    def _assign(self, wanted: int, context: Any) -> str:
        """The device string of this process's GPU steps: leased, given by Ray, or as pinned."""
        import torch

        resolved = self._device or resolve_device(self.device)
        if self.device not in {"auto", "cuda"}:
            return resolved  # cpu or an explicit cuda:<index>: the user pinned it
        cuda = resolved.startswith("cuda")
        if os.environ.get(leases.ARBITER_ENV) == "ray":
            # Ray set CUDA_VISIBLE_DEVICES to this task's GPUs: torch numbers them from 0.
            return "cuda:0" if cuda else "cpu"
        ids = leases.visible_device_ids(self.visible_devices,
                                        torch.cuda.device_count() if cuda else 0)
        if not ids:
            return resolved
        lease_dir = Path(self.lease_dir) if self.lease_dir else leases.default_lease_dir()
        owner = f"run {context.run_id[:8]} step {context.op_handle}"
        self._lease = leases.acquire(ids, wanted, lease_dir, owner=owner,
                                     timeout_s=self.lease_timeout_s)
        if not cuda:
            return "cpu"  # declared devices on a machine without CUDA: leased and recorded
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        numbering = ([e.strip() for e in env.split(",") if e.strip()] if env and env.strip()
                     else [str(i) for i in range(torch.cuda.device_count())])
        if wanted > 1:
            # torchrun's processes (DDP) inherit the environment: they see the leased devices
            # only, as cuda:0..N-1. This process's CUDA view is fixed first, so that its own
            # index below stays valid.
            torch.cuda.init()
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self._lease.ids)
        return f"cuda:{numbering.index(self._lease.ids[0])}"

    def _record(self, context: Any, wanted: int) -> None:
        """Once per step: log the device and add it to the step's outputs' metadata."""
        step_key = str(context.op_handle)
        if step_key in self._recorded_steps:
            return
        self._recorded_steps.add(step_key)
        if os.environ.get(leases.ARBITER_ENV) == "ray":
            ids, how = os.environ.get("CUDA_VISIBLE_DEVICES", ""), "ray"
        elif self._lease is not None:
            ids, how = ",".join(self._lease.ids), "lease"
        else:
            ids, how = "", "pinned"
        record = {"device": self._step_device or "", "device_ids": ids, "device_assignment": how,
                  "device_host": socket.gethostname(), "device_pid": os.getpid(),
                  "device_acquired_at": round(self._lease.acquired_at if self._lease else 0.0, 3)}
        for name, env in (("ray_node_id", leases.RAY_NODE_ENV),
                          ("ray_worker_id", leases.RAY_WORKER_ENV)):
            if os.environ.get(env):
                record[name] = os.environ[env]
        context.log.info(f"device {record['device']} (ids {ids or '-'}, by {how}) on "
                         f"{record['device_host']} pid {record['device_pid']}"
                         + (f", ray node {record['ray_node_id'][:12]}" if "ray_node_id" in record
                            else ""))
        for output in context.selected_output_names:
            try:
                context.add_output_metadata(record, output_name=output)
            except dg.DagsterInvariantViolationError:
                pass  # that output was already yielded: the log line above still says it

    @property
    def torch_dtype(self) -> torch.dtype:
        """The configured dtype as a torch dtype."""
        import torch

        return getattr(torch, self.dtype)


def _current_step() -> tuple[Any, int] | None:
    """The running step's context and how many devices it uses (its `synthfactory/devices` op
    tag; 0 for a step that is not a GPU step), or None outside a step (ops called directly)."""
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None
    tag = context.op_def.tags.get(leases.DEVICES_TAG)
    return context, int(tag) if tag is not None else 0


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when available else `cpu`; an unavailable CUDA device is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device {device!r} was asked for but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device: auto or cpu")
    return device
