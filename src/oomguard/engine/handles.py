"""What the supervisor holds for each worker process, and for the attempt it is running.

Each worker is forked by the run's fork server (:mod:`oomguard.engine.fork_server_main`),
or started as ``python -m oomguard.engine.worker FD SLOT_FD`` (a fresh interpreter) without
one; never a fork of the threaded supervisor. It is joined to the supervisor by a socket
pair and a shared 16-byte memfd slot where it marks the item it is running. Its death is
seen through a pidfd — readable the instant the process exits, no polling.

A :class:`WorkerHandle` is the process (and its cgroup); an :class:`Attempt` is one batch
sent to it, with everything the attempt gathers until it ends. ``handle.attempt is None``
means the worker is not running a batch.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import mmap
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from oomguard.engine import protocol
from oomguard.engine.config import JobConfig
from oomguard.engine.fork_server import ForkedProcess, ForkServer
from oomguard.engine.items import Batch
from oomguard.engine.protocol import AFTER_ITEMS, SLOT, SLOT_SIZE, BatchFailure, ItemFailure
from oomguard.engine.sinks import Results
from oomguard.limits.base import Limiter, MemoryGroup

# the loop turn open now (0: none). A turn judges one moment: within it a worker's cgroup
# is read once (memory.stat, which the kernel builds afresh for each read, is the dearest
# read a batch costs), and outside one every read is fresh. Two supervisors in one process
# only make each other read afresh more often.
_open_turn = [0]
_turns = itertools.count(1)


@contextlib.contextmanager
def one_moment() -> Iterator[None]:
    """A loop turn: workers' cgroup readings within it are taken once and shared."""
    _open_turn[0] = next(_turns)
    try:
        yield
    finally:
        _open_turn[0] = 0


class WorkerState(enum.Enum):
    STARTING = "starting"  # started, its function not loaded yet
    READY = "ready"  # takes batches (``attempt`` says whether it is running one)
    RETIRING = "retiring"  # recycled: asked to stop, never sent another batch


class KillReason(enum.StrEnum):
    """Why the supervisor killed a worker: its death is then no fault of its batch's own
    (``group``, ``preempted``) or is counted as such (``timeout``)."""

    TIMEOUT = "timeout"  # its batch ran over the per-batch timeout
    PREEMPTED = "preempted"  # stopped for a runaway (the smaller of two)
    GROUP = "group"  # another member of the group was OOM-killed


@dataclass(slots=True)
class Attempt:
    """One batch sent to a worker, and what came back of it so far."""

    batch: Batch
    prediction: int  # the admitted batch's predicted cost, bytes
    ticket: int  # its concurrency ticket: one in-flight limit cut per OOM event
    baseline: int  # the worker's working set when the batch was sent (bytes)
    charged_at_start: int  # and what its cgroup was charged then, page cache included
    started_at: float  # monotonic
    started_wall: float
    alone: bool = False  # dispatched on the "alone" rung, with the pool drained
    side: bool = False  # dispatched in the side lane, held at a ceiling (released or not)
    deadline: float | None = None  # monotonic; None: no timeout
    results: list[Results] = field(default_factory=list)  # groups of successes reported
    reported: set[int] = field(default_factory=set)  # indices reported (successes, failures)
    item_failures: list[ItemFailure] = field(default_factory=list)
    batch_failure: BatchFailure | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def take(
        self, indices: list[int], results: protocol.Payload, failures: list[ItemFailure]
    ) -> None:
        """A group of results (kept whole: written at the batch's end)."""
        self.reported.update(indices)
        if indices:
            self.results.append(
                Results(indices, lines=results)
                if isinstance(results, str)
                else Results(indices, values=results)
            )
        if failures:
            self.reported.update(failure.input_index for failure in failures)
            self.item_failures.extend(failures)

    def cost(self, peak: int, charged_now: int, working_now: int) -> int:
        """What the batch needed above its start: its peak (charged) over the charge at
        its start, less the page cache it added and left behind (read files the kernel may
        drop: no memory a next batch must find room for)."""
        cache_added = (charged_now - working_now) - (self.charged_at_start - self.baseline)
        return max(0, peak - self.charged_at_start - max(0, cache_added))

    def reached(self, peak: int | None) -> int:
        """Bytes its peak reached above the charge at its start (0 where unknown)."""
        return max(0, (peak or 0) - self.charged_at_start)

    def unreported(self) -> list[Any]:
        """The batch's items the worker never reported on, in order."""
        reported = self.reported
        return [item for item in self.batch.items if item.index not in reported]


@dataclass
class WorkerHandle:
    slot: int
    proc: subprocess.Popen[bytes] | ForkedProcess
    conn: Connection
    pidfd: int
    group: MemoryGroup
    oom_baseline: int  # its group's OOM kill count when it started
    running: mmap.mmap  # the shared slot: (batch_id, index) of the running item
    poller: Any  # a select.poll on the connection, for cheap "more to read?" checks
    state: WorkerState = WorkerState.STARTING
    attempt: Attempt | None = None
    batches_done: int = 0
    warm_for: set[str] = field(default_factory=set)  # kinds of work it has warmed up for
    first_rss: int | None = None  # RSS after its first batch: the leak check's reference
    oom_event: bool = False  # the limiter reported an OOM kill in its group
    kill_reason: KillReason | None = None
    group_restarted: bool = False  # the group restart for its OOM kill is done already
    held: int = 0  # bytes of side room its group is held to beside a runaway (0: not held)
    held_since: float = 0.0
    _reading: tuple[int, tuple[int, int]] = (0, (0, 0))  # (turn, its charge then)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def idle(self) -> bool:
        return self.state is WorkerState.READY and self.attempt is None

    def begin(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.kill_reason = None
        self.oom_event = False

    def end(self) -> None:
        """The attempt is over (the worker lives on)."""
        self.attempt = None
        self.kill_reason = None
        self.oom_event = False

    def kill(self, reason: KillReason) -> bool:
        """SIGKILL it for ``reason`` (kept for its death's verdict); False when it was
        being killed already."""
        if self.kill_reason is not None:
            return False
        self.kill_reason = reason
        self.proc.kill()
        return True

    def running_item(self) -> int | None:
        """The index of the item the worker is running (or was, when it died) in its batch.

        None when it has not started one of this batch's items, or has finished them all.
        """
        if self.attempt is None:
            return None
        batch_id, index = SLOT.unpack_from(self.running)
        if batch_id != self.attempt.batch.batch_id or index == AFTER_ITEMS:
            return None
        return int(index)

    def items_over(self) -> bool:
        """The worker got past the last item of its batch (trimming, reporting)."""
        if self.attempt is None:
            return False
        return SLOT.unpack_from(self.running) == (self.attempt.batch.batch_id, AFTER_ITEMS)

    def charge(self) -> tuple[int, int]:
        """Its group's (charge, working set) now: read once per loop turn (one_moment)."""
        turn = _open_turn[0]
        if turn and self._reading[0] == turn:
            return self._reading[1]
        reading = self.group.charge()
        if turn:
            self._reading = (turn, reading)
        return reading

    def working_set(self) -> int:
        """Its group's working set now; 0 when the group is gone (its death is being
        handled)."""
        try:
            return self.charge()[1]
        except OSError:
            return 0

    def peak(self) -> int | None:
        """Its group's peak since the attempt started (None where it cannot be read)."""
        try:
            return self.group.peak()
        except OSError:
            return None


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
    try:
        os.ftruncate(slot_fd, SLOT_SIZE)
        running = mmap.mmap(slot_fd, SLOT_SIZE)
        proc, pidfd = _launch(theirs.fileno(), slot_fd, group, env, server)
    except BaseException:
        ours.close()
        group.remove()
        raise
    finally:
        theirs.close()
        os.close(slot_fd)
    conn = Connection(ours.detach())
    if server is None or group.join_file() is None:
        group.add_pid(proc.pid)  # else it joined its cgroup itself, before anything ran
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    handle = WorkerHandle(
        slot=slot,
        proc=proc,
        conn=conn,
        pidfd=pidfd,
        group=group,
        oom_baseline=group.read().oom_kill,
        running=running,
        poller=poller,
    )
    conn.send((protocol.INIT, spec))
    return handle


def _launch(
    conn_fd: int,
    slot_fd: int,
    group: MemoryGroup,
    env: dict[str, str] | None,
    server: ForkServer | None,
) -> tuple[subprocess.Popen[bytes] | ForkedProcess, int]:
    """The worker process and its pidfd: forked by ``server``, else a fresh interpreter."""
    if server is not None:
        pid = server.spawn(conn_fd, slot_fd, group.join_file())
        forked = ForkedProcess(server, pid, _pidfd(pid))
        return forked, forked.pidfd
    proc = subprocess.Popen(
        # the supervisor's pid last: the worker dies with it (engine/worker.py main)
        [
            sys.executable,
            "-m",
            "oomguard.engine.worker",
            str(conn_fd),
            str(slot_fd),
            str(os.getpid()),
        ],
        pass_fds=(conn_fd, slot_fd),
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    return proc, os.pidfd_open(proc.pid)


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
    handle.running.close()
    for closer in (handle.conn.close, lambda: os.close(handle.pidfd)):
        try:
            closer()
        except OSError:
            pass
    handle.group.remove()
