"""Worker processes: start one in its own cgroup, talk to it, know the moment it dies.

Each worker is ``python -m oomguard.engine.worker FD`` (a fresh interpreter, never a fork
of the threaded supervisor), joined to the supervisor by a socket pair. Its death is seen
through a pidfd — readable the instant the process exits, no polling.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from oomguard.engine.items import Batch
from oomguard.engine.sinks import Record
from oomguard.limits.base import Limiter, MemoryGroup


@dataclass
class WorkerHandle:
    slot: int
    generation: int
    proc: subprocess.Popen[bytes]
    conn: Connection
    pidfd: int
    group: MemoryGroup
    oom_baseline: int
    state: str = "starting"  # starting | idle | busy | retiring (recycled: asked to stop)
    batch: Batch | None = None
    started_at: float = 0.0
    started_wall: float = 0.0
    attempt_alone: bool = False  # the batch ran with the pool drained (as dispatched)
    prediction: int = 0  # the admitted batch's predicted cost, bytes
    first_rss: int | None = None  # RSS after its first batch: the leak check's reference
    deadline: float | None = None
    usage_at_start: int = 0
    records: list[Record] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    item_failures: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    batch_failure: tuple[str, dict[str, Any]] | None = None
    oom_event: bool = False
    kill_reason: str | None = None
    batches_done: int = 0
    poller: Any = None  # a select.poll on the connection, for cheap "more to read?" checks

    @property
    def pid(self) -> int:
        return self.proc.pid

    def reset_batch(self) -> None:
        self.batch = None
        self.deadline = None
        self.records = []
        self.reported = set()
        self.item_failures = []
        self.batch_failure = None
        self.oom_event = False
        self.kill_reason = None


def start_worker(
    limiter: Limiter,
    job: MemoryGroup,
    slot: int,
    generation: int,
    spec: dict[str, Any],
    worker_memory: int | None,
    env: dict[str, str] | None = None,
) -> WorkerHandle:
    """Start a worker, move it into a fresh cgroup, then let it load the user's code."""
    group = limiter.create_group(f"w{slot}-{generation}", worker_memory, parent=job)
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oomguard.engine.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    except BaseException:
        ours.close()
        theirs.close()
        group.remove()
        raise
    theirs.close()
    conn = Connection(ours.detach())
    group.add_pid(proc.pid)
    handle = WorkerHandle(
        slot=slot,
        generation=generation,
        proc=proc,
        conn=conn,
        pidfd=os.pidfd_open(proc.pid),
        group=group,
        oom_baseline=group.read().oom_kill,
        started_at=time.monotonic(),
    )
    handle.poller = select.poll()
    handle.poller.register(conn.fileno(), select.POLLIN)
    conn.send(("init", spec))
    return handle


def close_worker(handle: WorkerHandle) -> None:
    """Reap a dead worker and release everything it held (its cgroup included)."""
    if handle.proc.poll() is None:
        handle.proc.kill()
    handle.proc.wait()
    for closer in (handle.conn.close, lambda: os.close(handle.pidfd)):
        try:
            closer()
        except OSError:
            pass
    handle.group.remove()
