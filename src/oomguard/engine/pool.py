"""Worker processes: start one in its own cgroup, talk to it, know the moment it dies.

Each worker is forked by the run's fork server (:mod:`oomguard.engine.forkserver`), or
started as ``python -m oomguard.engine.worker FD SLOT_FD`` (a fresh interpreter) without
one; never a fork of the threaded supervisor. It is joined to the supervisor by a socket
pair and a shared 16-byte memfd slot where it marks the item it is running. Its death is
seen through a pidfd — readable the instant the process exits, no polling.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from oomguard.engine.config import JobConfig
from oomguard.engine.forking import ForkedProcess, ForkServer
from oomguard.engine.items import Batch
from oomguard.engine.sinks import Results
from oomguard.engine.worker import AFTER_ITEMS, SLOT, SLOT_SIZE, Failure
from oomguard.limits.base import Limiter, MemoryGroup


@dataclass
class WorkerHandle:
    slot: int
    generation: int
    proc: subprocess.Popen[bytes] | ForkedProcess
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
    ticket: int = 0  # its concurrency ticket: one in-flight limit cut per OOM event
    first_rss: int | None = None  # RSS after its first batch: the leak check's reference
    deadline: float | None = None
    usage_at_start: int = 0
    results: list[Results] = field(default_factory=list)  # groups of successes reported
    reported: set[int] = field(default_factory=set)
    item_failures: list[Failure] = field(default_factory=list)
    batch_failure: tuple[str, dict[str, Any]] | None = None
    oom_event: bool = False
    kill_reason: str | None = None
    group_restarted: bool = False  # the group restart for its OOM kill is done already
    batches_done: int = 0
    poller: Any = None  # a select.poll on the connection, for cheap "more to read?" checks
    running: mmap.mmap | None = None  # the shared slot: (batch_id, index) of the running item
    side_share: int = 0  # bytes of side room it is held to beside a runaway (0: not held)
    side_since: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running_item(self) -> int | None:
        """The index of the item the worker is running (or was, when it died) in its batch.

        None when it has not started one of this batch's items, or has finished them all.
        """
        if self.running is None or self.batch is None:
            return None
        batch_id, index = SLOT.unpack_from(self.running)
        if batch_id != self.batch.batch_id or index == AFTER_ITEMS:
            return None
        return int(index)

    def items_over(self) -> bool:
        """The worker got past the last item of its batch (trimming, reporting)."""
        if self.running is None or self.batch is None:
            return False
        return SLOT.unpack_from(self.running) == (self.batch.batch_id, AFTER_ITEMS)

    def reset_batch(self) -> None:
        self.batch = None
        self.deadline = None
        self.results = []
        self.reported = set()
        self.item_failures = []
        self.batch_failure = None
        self.oom_event = False
        self.kill_reason = None


def worker_env(config: JobConfig) -> dict[str, str]:
    """Allocator settings for workers (and the fork server they are forked from), unless
    the user set them already."""
    env = {}
    if config.malloc_arena_max is not None and "MALLOC_ARENA_MAX" not in os.environ:
        env["MALLOC_ARENA_MAX"] = str(config.malloc_arena_max)
    if config.malloc_trim_threshold is not None and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        env["MALLOC_TRIM_THRESHOLD_"] = str(config.malloc_trim_threshold)
    return env


def start_worker(
    limiter: Limiter,
    job: MemoryGroup,
    slot: int,
    generation: int,
    spec: dict[str, Any],
    worker_memory: int | None,
    env: dict[str, str] | None = None,
    server: ForkServer | None = None,
) -> WorkerHandle:
    """Start a worker, move it into a fresh cgroup, then let it load the user's code.

    Forked by ``server`` when there is one (milliseconds), else spawned as a fresh
    interpreter. Either way it waits for ``init`` before anything of the user's runs.
    """
    group = limiter.create_group(f"w{slot}-{generation}", worker_memory, parent=job)
    ours, theirs = socket.socketpair()
    slot_fd = os.memfd_create("oomguard-running-item", os.MFD_CLOEXEC)
    proc: subprocess.Popen[bytes] | ForkedProcess
    try:
        os.ftruncate(slot_fd, SLOT_SIZE)
        running = mmap.mmap(slot_fd, SLOT_SIZE)
        joins_itself = server is not None and group.join_file() is not None
        if server is not None:
            pid = server.spawn(theirs.fileno(), slot_fd, group.join_file())
            proc = ForkedProcess(server, pid, _pidfd(pid))
            pidfd = proc.pidfd
        else:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "oomguard.engine.worker",
                    str(theirs.fileno()),
                    str(slot_fd),
                ],
                pass_fds=(theirs.fileno(), slot_fd),
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
            pidfd = os.pidfd_open(proc.pid)
    except BaseException:
        ours.close()
        theirs.close()
        os.close(slot_fd)
        group.remove()
        raise
    finally:
        theirs.close()
    os.close(slot_fd)
    conn = Connection(ours.detach())
    if not joins_itself:
        group.add_pid(proc.pid)
    handle = WorkerHandle(
        slot=slot,
        generation=generation,
        proc=proc,
        conn=conn,
        pidfd=pidfd,
        group=group,
        oom_baseline=group.read().oom_kill,
        started_at=time.monotonic(),
        running=running,
    )
    handle.poller = select.poll()
    handle.poller.register(conn.fileno(), select.POLLIN)
    conn.send(("init", spec))
    return handle


def _pidfd(pid: int) -> int:
    """A pidfd for ``pid``; for one that already ended (and was reaped), a descriptor that
    is readable at once, so its death is handled like any other."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return os.eventfd(1, os.EFD_CLOEXEC)


def close_worker(handle: WorkerHandle) -> None:
    """Reap a dead worker and release everything it held (its cgroup included)."""
    if handle.proc.poll() is None:
        handle.proc.kill()
    handle.proc.wait()
    if handle.running is not None:
        handle.running.close()
    for closer in (handle.conn.close, lambda: os.close(handle.pidfd)):
        try:
            closer()
        except OSError:
            pass
    handle.group.remove()
