"""The worker pool: one slot per worker, the processes in them, and their lifecycle.

Starting a slot's worker (forked by the fork server, or a fresh interpreter when the
server is gone), reading what workers say, recycling a worker that did its share or
leaks (loky's check), killing one for a reason the verdict will read, group restarts, the
per-batch timeout, and stopping them all. What a message or a death *means* is decided
elsewhere (:mod:`oomguard.engine.outcomes`); the pool keeps the processes.
"""

from __future__ import annotations

import collections
import functools
import selectors
import time
from collections.abc import Iterator
from multiprocessing.connection import wait
from typing import Any

from oomguard.engine import idle_worker, protocol
from oomguard.engine.config import JobConfig
from oomguard.engine.fork_server import ForkServer
from oomguard.engine.handles import (
    KillReason,
    WorkerHandle,
    WorkerState,
    close_worker,
    start_worker,
    worker_env,
)
from oomguard.engine.ledger import Ledger
from oomguard.engine.monitor import WorkerView
from oomguard.engine.protocol import BatchFailure
from oomguard.errors import ConfigError, ForkServerGone, OomguardError
from oomguard.limits.base import Limiter, MemoryGroup, OomEvent
from oomguard.sizes import format_size, mib

FIRST_WORKER_TIMEOUT = 120.0  # seconds for the first worker to load the user's function
START_FAILURES_PER_SLOT = 3  # workers dying before they load the function, in a row: stop
STOP_GRACE = 5.0  # seconds workers have to stop when asked, at the end of a run


class WorkerPool:
    def __init__(
        self,
        config: JobConfig,
        limiter: Limiter,
        spec: dict[str, Any],
        ledger: Ledger,
        selector: selectors.BaseSelector,
    ) -> None:
        self.config = config
        self.limiter = limiter
        self.spec = spec
        self.ledger = ledger
        self.selector = selector
        self.workers: dict[int, WorkerHandle] = {}
        self.job: MemoryGroup | None = None
        self.fork_server: ForkServer | None = None
        self._generations: collections.Counter[int] = collections.Counter()
        self._oom_pids: set[int] = set()  # victims the watchdog named
        self._start_failures = 0  # workers that died before loading the function, in a row

    # ---------------------------------------------------------------- starting

    def use_fork_server(self, booted: ForkServer | OSError | None) -> None:
        """``booted``: started by the caller as early as it could, the error if it could not
        start, None where workers start as fresh interpreters (``start_method="spawn"``)."""
        if isinstance(booted, OSError):
            self.fork_server_lost(booted)
        else:
            self.fork_server = booted

    def fork_server_lost(self, err: BaseException) -> None:
        """Without a fork server workers start as fresh interpreters: slower, as good."""
        self.ledger.event("fork_server_unavailable", error=str(err))
        if self.fork_server is not None:
            self.fork_server.close()
        self.fork_server = None

    def start(self, job: MemoryGroup) -> None:
        """Start every slot's worker in ``job``; returns once one has loaded the function
        (load errors, such as a function that can't be imported, stop the run here)."""
        self.job = job
        if self.fork_server is not None:
            try:
                self.fork_server.wait_ready()
            except (OSError, ForkServerGone) as err:
                self.fork_server_lost(err)
        cap = self.worker_cap()
        if cap is not None:  # an idle worker measured before, by an earlier job: no start
            idle_worker.check_cap(cap, self.fork_server, self.spec)
        for slot in range(self.config.workers):
            self.start_slot(slot)
        starting = list(self.workers.values())
        while not any(w.state is WorkerState.READY for w in self.workers.values()):
            ready = wait([w.conn for w in starting], timeout=FIRST_WORKER_TIMEOUT)
            if not ready:
                raise OomguardError(f"no worker became ready within {FIRST_WORKER_TIMEOUT:.0f} s")
            for handle in [w for w in starting if w.conn in ready]:
                for _ in self.read(handle):
                    pass  # nothing was sent yet: only "ready" or "fatal" can come
                if handle.state is WorkerState.STARTING and handle.proc.poll() is not None:
                    starting.remove(handle)  # dead before it loaded: its pidfd tells the loop
                    oom, _ = self.oom_seen(handle)
                    self.ledger.event(
                        "worker_failed_to_start",
                        status="oom_killed" if oom else "worker_crash",
                        worker_pid=handle.pid,
                        returncode=handle.proc.returncode,
                    )
                    if not starting:
                        raise self.start_failed(handle)

    def worker_cap(self) -> int | None:
        """The most one worker may hold: the job's cap, or its own where it is lower."""
        caps = [c for c in (self.job and self.job.limit, self.config.worker_memory) if c]
        return min(caps) if caps else None

    def start_failed(self, handle: WorkerHandle) -> OomguardError:
        """The error for workers that die before they can load the function: a cap below
        what an idle worker holds (measured by a probe worker: a configuration error, exit
        2) or a crash while loading."""
        oom, _ = self.oom_seen(handle)
        function = self.spec["function"]
        cap = self.worker_cap()
        if not oom or cap is None:
            return OomguardError(
                f"workers die while they load {function!r} (exit code {handle.proc.returncode})"
            )
        measured = idle_worker.measure(
            self.limiter,
            self.fork_server,
            self.spec,
            worker_env(self.config),
            idle_worker.probe_ceiling(cap),
        )
        if measured is not None and measured[0] >= cap:
            return idle_worker.too_small(cap, measured[0], at_least=measured[1])
        each = f" (~{format_size(measured[0])} each)" if measured is not None else ""
        return ConfigError(
            f"workers are OOM-killed while they load {function!r}: the cap of "
            f"{format_size(cap)} is too small for {self.config.workers} idle workers{each}; "
            "give --memory more or --workers fewer"
        )

    def note_start_failure(self, handle: WorkerHandle) -> None:
        """A worker died before it loaded the function; after ``START_FAILURES_PER_SLOT``
        such deaths per slot in a row, the run stops (replacing them would never end)."""
        self._start_failures += 1
        if self._start_failures >= START_FAILURES_PER_SLOT * self.config.workers:
            raise self.start_failed(handle)

    def start_slot(self, slot: int) -> None:
        assert self.job is not None
        self._generations[slot] += 1
        start = functools.partial(
            start_worker,
            self.limiter,
            self.job,
            slot,
            self._generations[slot],
            self.spec,
            self.config.worker_memory,
            worker_env(self.config),
        )
        try:
            handle = start(self.fork_server)
        except ForkServerGone as err:
            self.fork_server_lost(err)
            handle = start(None)  # a fresh interpreter: slower, as good
        self.workers[slot] = handle
        self.selector.register(handle.conn, selectors.EVENT_READ, ("messages", handle))
        self.selector.register(handle.pidfd, selectors.EVENT_READ, ("death", handle))
        self.ledger.counters.worker_starts += 1

    # ---------------------------------------------------------------- looking

    def in_flight(self) -> int:
        return sum(1 for w in self.workers.values() if w.attempt is not None)

    def busy(self) -> list[WorkerHandle]:
        return [w for w in self.workers.values() if w.attempt is not None]

    def idle_worker(self) -> WorkerHandle | None:
        return next((w for w in self.workers.values() if w.idle), None)

    def current(self, handle: WorkerHandle) -> bool:
        """Whether ``handle`` is still its slot's worker (not one already replaced)."""
        return self.workers.get(handle.slot) is handle

    def views(self) -> list[WorkerView]:
        """What the monitor thread samples (a copy: the thread must not see the dict change)."""
        return [WorkerView(w.slot, w.pid, w.group) for w in list(self.workers.values())]

    def oom_seen(self, handle: WorkerHandle) -> tuple[bool, int]:
        """Whether the kernel (or the watchdog) OOM-killed in ``handle``'s group, and how
        many kills its counter shows since the worker started."""
        try:
            kills = handle.group.read().oom_kill - handle.oom_baseline
        except OSError:
            kills = 0
        return handle.oom_event or kills > 0 or handle.pid in self._oom_pids, kills

    # ---------------------------------------------------------------- messages

    def read(self, handle: WorkerHandle) -> Iterator[dict[str, Any]]:
        """Take in what ``handle`` said; yields the stats of each batch it finished (the
        caller settles the batch there, before the next message is read)."""
        poll = handle.poller.poll  # Connection.poll() builds a selector per call
        try:
            while poll(0):
                message = handle.conn.recv()
                kind = message[0]
                attempt = handle.attempt
                if kind in (protocol.ITEMS, protocol.DONE):
                    if attempt is not None and message[1] == attempt.batch.batch_id:
                        attempt.take(message[2], message[3], message[4])
                        if kind == protocol.DONE:
                            yield message[5]
                elif kind == protocol.BATCH_ERROR:
                    if attempt is not None and message[1] == attempt.batch.batch_id:
                        attempt.batch_failure = BatchFailure(message[2], message[3])
                elif kind == protocol.READY:
                    handle.state = WorkerState.READY
                    self._start_failures = 0
                    if idle_worker.known(self.fork_server, self.spec) is None:
                        held = handle.working_set()  # kept for the next job's check
                        idle_worker.remember(self.fork_server, self.spec, held)
                elif kind == protocol.FATAL:
                    raise ConfigError(message[1])
        except (EOFError, OSError):
            pass  # the worker is gone; its death is handled from its pidfd

    def note_oom_events(self, events: list[OomEvent]) -> None:
        """OOM kills the limiter pushed: marked on their worker, each an event."""
        by_key = {w.group.key: w for w in self.workers.values()}
        for event in events:
            if event.pid is not None:
                self._oom_pids.add(event.pid)
            handle = by_key.get(event.group)
            if handle is not None:
                handle.oom_event = True
            self.ledger.event("oom_kill", at=event.time, group=event.group, source=event.source)

    # ---------------------------------------------------------------- ending workers

    def maybe_recycle(self, handle: WorkerHandle, stats: dict[str, Any]) -> None:
        """Retire a worker that did its share, or whose idle RSS grew (loky's leak check)."""
        rss = int(stats.get(protocol.RSS_AFTER, 0))
        if handle.first_rss is None:
            handle.first_rss = rss
        limit = self.config.max_batches_per_worker
        reason = None
        if limit is not None and handle.batches_done >= limit:
            reason = f"{handle.batches_done} batches done"
        elif rss - handle.first_rss > self.config.recycle_rss_growth:
            reason = f"RSS grew {mib(rss - handle.first_rss)} MiB over its first batch"
        if reason is None:
            return
        handle.state = WorkerState.RETIRING
        self.ledger.counters.recycled += 1
        self.ledger.event("recycle", worker_pid=handle.pid, reason=reason)
        try:
            handle.conn.send((protocol.STOP,))
        except OSError:
            handle.proc.kill()

    def kill_timed_out(self) -> None:
        """Kill each worker whose batch ran past its deadline (a held batch may be stalled
        at its ceiling: its clock runs again on release)."""
        now = time.monotonic()
        for handle in self.busy():
            attempt = handle.attempt
            assert attempt is not None
            if attempt.deadline is not None and now >= attempt.deadline and not handle.held:
                handle.kill(KillReason.TIMEOUT)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a batch whose clock runs (a held one's waits for its
        release, which moves it: one passed while held must not wake the loop at once)."""
        deadlines = [
            w.attempt.deadline
            for w in self.workers.values()
            if w.attempt is not None and w.attempt.deadline is not None and not w.held
        ]
        return min(deadlines) if deadlines else None

    def restart_group(self, victim: WorkerHandle) -> None:
        """One member OOM-killed: the whole group goes and comes back together, never
        left half-alive (a model handler's processes, say)."""
        self.ledger.counters.group_restarts += 1
        victim.group_restarted = True
        self.ledger.event("group_restart", victim_pid=victim.pid)
        for other in list(self.workers.values()):
            if other is not victim and other.kill_reason is None:
                other.kill_reason = KillReason.GROUP  # killed by the kernel already (v2), or now
                if other.proc.poll() is None:
                    other.proc.kill()

    def remove(self, handle: WorkerHandle) -> None:
        """A dead worker out of the pool: reaped, its descriptors and cgroup released."""
        if self.workers.get(handle.slot) is handle:
            del self.workers[handle.slot]
        for fileobj in (handle.conn, handle.pidfd):
            try:
                self.selector.unregister(fileobj)
            except (KeyError, ValueError, OSError):
                pass
        close_worker(handle)

    def stop_all(self) -> None:
        """Ask every worker to stop, give them ``STOP_GRACE`` seconds, kill the rest."""
        for handle in list(self.workers.values()):
            try:
                handle.conn.send((protocol.STOP,))
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for handle in list(self.workers.values()):
            try:
                handle.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                handle.proc.kill()
            self.remove(handle)
        self.workers.clear()
