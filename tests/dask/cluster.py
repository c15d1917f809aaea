"""A real Dask cluster on 127.0.0.1 for the tests: ``dask scheduler`` and ``dask worker``
processes (each worker with its nanny, as users run them), started on free ports and
stopped with everything they started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

START_TIMEOUT = 60.0  # seconds for the scheduler and the workers to come up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dask(*args: str) -> list[str]:
    return [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


@dataclass
class DaskCluster:
    directory: Path
    nthreads: int = 2
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def start_scheduler(self, port: int | None = None) -> None:
        port = port or free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        # a batch whose node died comes back to the driver at once (oomguard sends it on)
        self.env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
        self.scheduler = self._spawn(
            "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"
        )
        self._wait_port(port)

    def start_node(self, name: str) -> None:
        local = self.directory / name
        local.mkdir(exist_ok=True)
        self.nodes[name] = self._spawn(
            "worker", self.address, "--host", "127.0.0.1", "--name", name,
            "--nthreads", str(self.nthreads), "--no-dashboard", "--memory-limit", "0",
            "--local-directory", str(local), "--death-timeout", "60",
        )  # fmt: skip

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"{args[0]}-{len(self.nodes)}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(self.directory), **self.env}
        try:
            return subprocess.Popen(
                _dask(*args), stdout=log, stderr=log, start_new_session=True, env=env
            )
        finally:
            log.close()

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            assert self.scheduler is not None and self.scheduler.poll() is None
            time.sleep(0.05)
        raise TimeoutError(f"the scheduler did not listen on {port}")

    def kill_node(self, name: str) -> None:
        """SIGKILL a node's whole process tree (nanny, worker, its fork server and workers)."""
        kill_tree(self.nodes.pop(name))

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        kill_tree(self.scheduler)
        self.scheduler = None

    def stop(self) -> None:
        """Every node asked to stop (its plugin's teardown runs), then anything left killed."""
        procs = [*self.nodes.values(), *filter(None, [self.scheduler])]
        for proc in procs:
            proc.terminate()  # the nanny closes its worker, whose plugin's teardown runs
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            kill_tree(proc)
        self.nodes.clear()
        self.scheduler = None


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and every process of its session, and reap ``proc``."""
    members = []
    with contextlib.suppress(psutil.NoSuchProcess):
        members = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in members[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=10)


@contextlib.contextmanager
def dask_cluster(directory: Path, nodes: int = 2, nthreads: int = 2) -> Iterator[DaskCluster]:
    cluster = DaskCluster(directory, nthreads)
    try:
        cluster.start_scheduler()
        for i in range(nodes):
            cluster.start_node(f"node{i}")
        yield cluster
    finally:
        cluster.stop()
        sweep_groups()


def sweep_groups() -> None:
    """Groups of nodes that died by SIGKILL (their process is gone: nobody else removes
    them until a node starts on this machine again)."""
    from oomguard.limits.cgroup import sweep_stale_groups
    from oomguard.limits.select_limiter import probe_cgroup_access

    access = probe_cgroup_access()
    if access.writable and access.base is not None:
        sweep_stale_groups(access.base)
