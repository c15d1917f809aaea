"""The node engine: on one Dask worker, the node's capped worker processes, and one
attempt of a batch on one of them.

::

    Dask task thread ─► NodeEngine.run(spec, batch) ─► a worker of that spec (borrowed)
                              │ the gate: ``alone`` waits for the node to drain          │
                              ▼                                                           ▼
                         NodeResult ◄── messages · pidfd (death) · node OOM counter ── worker
                         (results, failures, the running item, status and evidence)

Every worker is an engine worker (:mod:`oomguard.engine.worker`): forked by the node's
fork server, in a cgroup of its own inside the node's group, which holds the node's
budget. Dask's worker processes are daemonic (``multiprocessing`` refuses them
children); the fork server is a plain subprocess, so they may still have workers.

The node decides nothing: one attempt, reported whole. What the attempt's end means for
its batch (retry, alone, bisect, quarantine) is the driver's ladder
(:mod:`oomguard.engine.recovery`); a plain Dask user's calls go through the same attempts
with the executor's own rungs (:mod:`oomguard.dask.executor`).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from oomguard.classify import Status
from oomguard.engine import protocol
from oomguard.engine.config import JobConfig
from oomguard.engine.fork_server import ForkServer, boot
from oomguard.engine.handles import KillReason, WorkerHandle, close_worker, start_worker
from oomguard.engine.handles import worker_env as engine_worker_env
from oomguard.engine.protocol import AFTER_ITEMS, SLOT, BatchFailure, ItemFailure
from oomguard.engine.sinks import Results
from oomguard.errors import ConfigError, ForkServerGone, OomguardError
from oomguard.limits.base import Limiter, MemoryGroup
from oomguard.limits.cgroup import CgroupLimiter, sweep_stale_groups
from oomguard.limits.select_limiter import open_limiter
from oomguard.memory.kernel_log import KernelLogTail, kill_report
from oomguard.sizes import mib

READY_TIMEOUT = 120.0  # seconds for a new worker to load its function
KERNEL_LINES = 2000  # the kernel log's last lines searched for a kill's report
NORMAL = ("normal", "")  # the pressure level sent with every batch: nodes have no backend


class WorkerLost(Exception):
    """A new worker died (or hung) before it loaded the function."""

    def __init__(self, pid: int, code: int | None) -> None:
        super().__init__(f"worker {pid} ended with {code} while loading")
        self.pid = pid
        self.code = code


@dataclass
class NodeResult:
    """One attempt of a batch on a node, everything the driver needs to settle it (pickled
    back to the driver as the Dask task's result)."""

    node: str
    status: str  # a Status value: success, oom_killed, worker_crash, timeout
    results: list[Results] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    item_failures: list[ItemFailure] = field(default_factory=list)
    batch_failure: BatchFailure | None = None
    running: int | None = None  # the item running when the worker died
    items_over: bool = False  # it died after the last item (reporting, trimming)
    evidence: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    worker_pid: int = 0
    peak: int | None = None  # bytes, the worker group's peak during the attempt
    started_wall: float = 0.0
    seconds: float = 0.0

    def take(self, message: tuple[Any, ...]) -> None:
        """An ITEMS or DONE message's group of results."""
        indices, payload, failures = message[2], message[3], message[4]
        self.reported.update(indices)
        if indices:
            lines = payload if isinstance(payload, str) else None
            values = None if lines is not None else payload
            self.results.append(Results(indices, values=values, lines=lines))
        if failures:
            self.reported.update(failure.input_index for failure in failures)
            self.item_failures.extend(failures)


class Gate:
    """At most ``slots`` attempts at once; an ``alone`` attempt runs with none beside it
    (it waits for the others to end, and new ones wait for it)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0
        self.alone = False
        self.waiting_alone = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, alone: bool) -> Iterator[None]:
        with self._cond:
            if alone:
                self.waiting_alone += 1
                self._cond.wait_for(lambda: self.running == 0)
                self.waiting_alone -= 1
                self.alone = True
            else:
                self._cond.wait_for(
                    lambda: not self.alone and not self.waiting_alone and self.running < self.slots
                )
            self.running += 1
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self.alone = self.alone and not alone
                self._cond.notify_all()


class NodeEngine:
    """The node's group (its budget), its fork server and its idle workers, by spec."""

    def __init__(
        self,
        memory: int,
        workers: int,
        *,
        name: str = "",
        worker_memory: int | None = None,
        limiter: str = "auto",
    ) -> None:
        self.name = name or socket.gethostname()
        self.memory = memory
        self.workers = workers
        self.worker_memory = worker_memory
        self.env = engine_worker_env(JobConfig(function="oomguard.dask.calls:call"))
        self.limiter: Limiter = open_limiter(limiter)  # type: ignore[arg-type]
        if isinstance(self.limiter, CgroupLimiter):
            sweep_stale_groups(self.limiter.base)  # groups of nodes that died by SIGKILL
        self.group: MemoryGroup = self.limiter.create_group("node", memory)
        booted = boot(self.env)
        self.fork_server: ForkServer | None = booted if isinstance(booted, ForkServer) else None
        self.kernel_log = KernelLogTail()
        self.gate = Gate(workers)
        self._lock = threading.Lock()
        self._idle: dict[str, list[WorkerHandle]] = {}
        self._live: set[int] = set()  # pids of the node's workers
        self._oom_pids: set[int] = set()
        self._slots = 0
        self.closed = False

    # ---------------------------------------------------------------- an attempt

    def run(
        self,
        spec: dict[str, Any],
        batch_id: int,
        items: list[tuple[int, Any]],
        *,
        alone: bool = False,
        attempt: int = 1,
        timeout: float | None = None,
    ) -> NodeResult:
        """One attempt of ``items`` through ``spec``'s function on a worker of this node."""
        with self.gate.hold(alone):
            node_kills = self._node_kills()
            try:
                handle = self._borrow(spec)
            except WorkerLost as lost:  # the attempt's worker died before it could start it
                return self._start_failed(lost, node_kills)
            result = self._attempt(handle, batch_id, items, attempt, timeout)
            if result.status == Status.SUCCESS or handle.proc.poll() is None:
                self._give_back(spec, handle)
            else:
                self._release(handle)
            return result

    def _attempt(
        self,
        handle: WorkerHandle,
        batch_id: int,
        items: list[tuple[int, Any]],
        attempt: int,
        timeout: float | None,
    ) -> NodeResult:
        result = NodeResult(self.name, Status.SUCCESS, worker_pid=handle.pid)
        result.started_wall = time.time()
        started = time.monotonic()
        node_kills = self._node_kills()
        with contextlib.suppress(OSError):
            handle.group.reset_peak()
        with contextlib.suppress(OSError):
            handle.conn.send(protocol.batch_message(batch_id, items, NORMAL, attempt))
        deadline = started + timeout if timeout is not None else None
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(_watched(handle), [], [], wait)
            if not ready:
                handle.kill(KillReason.TIMEOUT)
                continue
            if self._read(handle, batch_id, result):
                break
            if handle.pidfd in ready or handle.proc.poll() is not None:
                self._read(handle, batch_id, result)  # what it said before dying counts
                self._died(handle, result, node_kills, batch_id)
                break
        result.seconds = time.monotonic() - started
        result.peak = handle.peak()
        return result

    def _read(self, handle: WorkerHandle, batch_id: int, result: NodeResult) -> bool:
        """Take in what the worker said; True once its batch is done."""
        try:
            while handle.poller.poll(0):
                message = handle.conn.recv()
                kind = message[0]
                if kind in (protocol.ITEMS, protocol.DONE) and message[1] == batch_id:
                    result.take(message)
                    if kind == protocol.DONE:
                        result.stats = message[5]
                        return True
                elif kind == protocol.BATCH_ERROR and message[1] == batch_id:
                    result.batch_failure = BatchFailure(message[2], message[3])
        except (EOFError, OSError):
            pass  # it is gone: its pidfd says so
        return False

    def _died(
        self,
        handle: WorkerHandle,
        result: NodeResult,
        node_kills: int,
        batch_id: int,
    ) -> None:
        """Classify the worker's death, with the evidence a person can check."""
        handle.proc.wait()
        handle.attempt = None
        result.running, result.items_over = running_item(handle, batch_id)
        try:
            own = handle.group.read().oom_kill - handle.oom_baseline
        except OSError:
            own = 0
        node = self._node_kills() - node_kills
        self._note_events()
        oom = own > 0 or node > 0 or handle.pid in self._oom_pids
        code = handle.proc.returncode
        if handle.kill_reason is KillReason.TIMEOUT:
            status = Status.TIMEOUT
        elif oom:
            status = Status.OOM_KILLED
        else:
            status = Status.WORKER_CRASH
        result.status = status
        evidence: dict[str, Any] = {"node": self.name, "worker_pid": handle.pid}
        evidence["returncode"] = code
        if code is not None and code < 0:
            evidence["signal"] = -code
        if status is Status.OOM_KILLED:
            evidence["enforcer"] = self.limiter.kind
            evidence["oom_kill_count"] = max(own + node, 1)
            evidence["node_cap_mb"] = mib(self.memory)
            kernel = self._kernel_evidence(handle.pid)
            if kernel:
                evidence["kernel_log"] = kernel
        result.evidence = evidence

    def _start_failed(self, lost: WorkerLost, node_kills: int) -> NodeResult:
        """A worker that died while it loaded the function (killed for memory, most often:
        the node at its cap while another attempt grew): the attempt's end, for its ladder."""
        oom = self._node_kills() > node_kills
        status = Status.OOM_KILLED if oom else Status.WORKER_CRASH
        evidence: dict[str, Any] = {"node": self.name, "worker_pid": lost.pid}
        evidence.update(returncode=lost.code, while_starting=True)
        if oom:
            evidence.update(enforcer=self.limiter.kind, node_cap_mb=mib(self.memory))
        return NodeResult(self.name, status, evidence=evidence, worker_pid=lost.pid)

    def _node_kills(self) -> int:
        try:
            return self.group.read().oom_kill
        except OSError:
            return 0

    def _note_events(self) -> None:
        with self._lock:
            for event in self.limiter.events.drain():
                if event.pid is not None:
                    self._oom_pids.add(event.pid)

    def _kernel_evidence(self, pid: int) -> list[str]:
        with self._lock:
            recent = self.kernel_log.read()
        return kill_report(recent, pid, KERNEL_LINES)

    # ---------------------------------------------------------------- workers

    def _borrow(self, spec: dict[str, Any]) -> WorkerHandle:
        key = json.dumps(spec, sort_keys=True, default=str)
        with self._lock:
            if self.closed:
                raise OomguardError(f"the oomguard node {self.name} is closed")
            idle = self._idle.setdefault(key, [])
            while idle:
                handle = idle.pop()
                if handle.proc.poll() is None:
                    return handle
                self._release_locked(handle)
            self._retire_other_specs(key)
            self._slots += 1
            slot = self._slots
        handle = self._start(slot, spec)
        with self._lock:
            self._live.add(handle.pid)
        self._wait_ready(handle, spec)
        return handle

    def _start(self, slot: int, spec: dict[str, Any]) -> WorkerHandle:
        try:
            return start_worker(
                self.limiter, self.group, slot, 1, spec, self.worker_memory, self.env,
                self.fork_server,
            )  # fmt: skip
        except ForkServerGone:
            self.fork_server = None  # fresh interpreters from now on: slower, as good
            return start_worker(
                self.limiter, self.group, slot, 1, spec, self.worker_memory, self.env
            )

    def _wait_ready(self, handle: WorkerHandle, spec: dict[str, Any]) -> None:
        """Until the new worker has loaded the function; its load error is the caller's."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select(_watched(handle), [], [], max(0.0, left))
            try:
                while handle.poller.poll(0):
                    message = handle.conn.recv()
                    if message[0] == protocol.READY:
                        return
                    if message[0] == protocol.FATAL:
                        self._release(handle)
                        raise ConfigError(message[1])
            except (EOFError, OSError):
                pass
            if not ready or handle.proc.poll() is not None:
                if handle.proc.poll() is None:
                    handle.kill(KillReason.TIMEOUT)
                code = handle.proc.wait()
                self._release(handle)
                raise WorkerLost(handle.pid, code)

    def _retire_other_specs(self, key: str) -> None:
        """Room for a worker of another function: idle ones of other specs go first."""
        live = len(self._live)
        for other, idle in self._idle.items():
            while other != key and idle and live >= self.workers:
                self._release_locked(idle.pop())
                live -= 1

    def _give_back(self, spec: dict[str, Any], handle: WorkerHandle) -> None:
        key = json.dumps(spec, sort_keys=True, default=str)
        with self._lock:
            if self.closed:
                self._release_locked(handle)
            else:
                self._idle.setdefault(key, []).append(handle)

    def _release(self, handle: WorkerHandle) -> None:
        with self._lock:
            self._release_locked(handle)

    def _release_locked(self, handle: WorkerHandle) -> None:
        self._live.discard(handle.pid)
        with contextlib.suppress(OSError, ValueError):
            handle.conn.send((protocol.STOP,))
        close_worker(handle)

    def close(self) -> None:
        """Stop every idle worker, the fork server, and remove the node's groups."""
        with self._lock:
            self.closed = True
            idle = [handle for handles in self._idle.values() for handle in handles]
            self._idle.clear()
            for handle in idle:
                self._release_locked(handle)
        if self.fork_server is not None:
            self.fork_server.close()
        self.kernel_log.close()
        self.limiter.close()


def running_item(handle: WorkerHandle, batch_id: int) -> tuple[int | None, bool]:
    """The item the dead worker was running (from its shared slot), and whether it had
    got past the last one."""
    ran, index = SLOT.unpack_from(handle.running)
    if ran != batch_id:
        return None, False
    if index == AFTER_ITEMS:
        return None, True
    return int(index), False


def _watched(handle: WorkerHandle) -> list[Any]:
    """What an attempt waits on: the worker's messages and its death."""
    return [handle.conn, handle.pidfd]
