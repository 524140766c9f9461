"""A real Ray cluster on 127.0.0.1 for the tests and benchmarks/fan_out.py: a head node and
worker node(s), each a `ray start --block` process in a process group of its own, so that
stopping the cluster ends exactly the processes it started (never `ray stop`, which would end
every Ray process of this user on the machine)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support import PROJECT_ROOT

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalRayCluster:
    """Start with `start()`, stop with `stop()` (also after a failure: call it in a finalizer).

    `nodes` is one (num_cpus, num_gpus) per node, the head first. Declared GPUs need no GPU:
    Ray schedules them and sets each task's CUDA_VISIBLE_DEVICES all the same.
    """

    def __init__(self, nodes: Sequence[tuple[int, int]], object_store_mb: int = 100) -> None:
        self.nodes = list(nodes)
        self.object_store = object_store_mb * 2**20
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's socket paths must stay short: a directory of our own directly under /tmp.
        self.temp_dir = tempfile.mkdtemp(prefix="sf-ray-", dir="/tmp")
        self.processes: list[subprocess.Popen] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                    "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT),
                                                   os.environ.get("PYTHONPATH", "")])}

    def _start_node(self, cpus: int, gpus: int, head: bool) -> None:
        where = ["--head", f"--port={self.port}", "--include-dashboard=false",
                 f"--temp-dir={self.temp_dir}"] if head else [f"--address={self.address}"]
        command = [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1",
                   f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                   f"--object-store-memory={self.object_store}", "--disable-usage-stats", *where]
        log = open(Path(self.temp_dir) / f"node-{len(self.processes)}.log", "w")  # noqa: SIM115
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout_s: float = 120.0) -> LocalRayCluster:
        """Start the head, then the workers; return when every node is alive."""
        import ray

        (head_cpus, head_gpus), *workers = self.nodes
        self._start_node(head_cpus, head_gpus, head=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ray.init(address=self.address, log_to_driver=False)
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline or self.processes[0].poll() is not None:
                    raise RuntimeError(f"the Ray head did not start: {self.log()}") from None
                time.sleep(1)
        for cpus, gpus in workers:
            self._start_node(cpus, gpus, head=False)
        while len([node for node in ray.nodes() if node["Alive"]]) < len(self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray nodes did not join: {self.log()}")
            time.sleep(0.5)
        return self

    def node_ids(self) -> list[str]:
        """The alive nodes' ids, the head first."""
        import ray

        alive = [node for node in ray.nodes() if node["Alive"]]
        return [node["NodeID"] for node in sorted(
            alive, key=lambda node: not node["Resources"].get("node:__internal_head__"))]

    def log(self) -> str:
        return "\n".join(path.read_text()[-2000:] for path in Path(self.temp_dir).glob("*.log"))

    def stop(self) -> None:
        """Disconnect, then end each node's process group (TERM, then KILL after 10 s)."""
        import ray

        ray.shutdown()
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # what the group left behind (raylet, gcs, workers)
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        self.processes = []
