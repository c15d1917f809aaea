"""The supervisor: one loop around one wait, each event handled in a short named step.

::

    source ─► reader thread ─► [item queue] ─► open batch ─┐
                                                            ▼
    pending: retries, halves (first) ───────────────► dispatch ─► worker in its cgroup
    alone: batches that need the whole budget                        │ item / done messages
                                                                     │ pidfd: death
                                                                     │ cgroup: OOM event
                                                                     ▼
                        handle_message / handle_death / handle_oom_events / handle_timeouts
                                 │ recovery ladder (recovery.py)
                                 ▼
                sink ◄── results        quarantine.jsonl ◄── poison items, with evidence

While a runaway batch grows (admission.py), new work goes only to a side lane of workers
held at a small ceiling; what needs more waits in ``set_aside`` until the runaway ends.
Runaways stopped for a bigger one wait in ``suspects`` and run one at a time after it.

Workers never decide policy; they run batches and report. The supervisor never holds the
input: the reader thread feeds a bounded queue, and results go to the sink as each batch
ends.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import queue
import selectors
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from oomguard.backends.errors import means_backend_failure
from oomguard.backends.supervisor import BackendFailed, BackendSupervisor
from oomguard.engine.admission import Admission, AdmissionConfig
from oomguard.engine.aimd import Aimd
from oomguard.engine.artifacts import MemoryLog, open_private, write_dmesg_excerpt, write_json
from oomguard.engine.batch_size import BatchSizer
from oomguard.engine.classify import Status, classify_text
from oomguard.engine.config import JobConfig
from oomguard.engine.forking import ForkServer, ForkServerGone
from oomguard.engine.group_kill import kernel_victim
from oomguard.engine.items import Batch, Item
from oomguard.engine.monitor import Monitor, WorkerView
from oomguard.engine.pool import WorkerHandle, close_worker, start_worker, worker_env
from oomguard.engine.pressure import assess
from oomguard.engine.progress import Progress, Snapshot
from oomguard.engine.reader import END, SourceReader
from oomguard.engine.recovery import (
    Decision,
    Policy,
    after_failure,
    pin_item,
    retry_uncounted,
    single_item_batch,
)
from oomguard.engine.run_record import attempt_entry, quantile_dict, write_manifest
from oomguard.engine.sinks import OrderedWriter, Results, Sink, SinkError
from oomguard.engine.sources import Source
from oomguard.engine.worker import Failure
from oomguard.errors import CgroupError, ConfigError, OomguardError
from oomguard.journal.ranges import RangeSet
from oomguard.journal.store import Checkpoint, Journal
from oomguard.limits.base import Limiter, MemoryGroup, OomEvent
from oomguard.memory.gpu import read_gpus
from oomguard.memory.kernel_log import KernelLogTail, find_oom_kills, read_kernel_log
from oomguard.memory.own import own_rss
from oomguard.memory.system import read_system_memory
from oomguard.metrics.exporter import BATCH_SECONDS, Exporter, RunNumbers
from oomguard.metrics.registry import Registry
from oomguard.sizes import mib

SIDE_MINIMUM = 16 * 1024 * 1024  # less side room than this is not worth a held batch
WATCH_INTERVAL = 0.05  # seconds between looks at the workers' memory while it is busy
BUSY_SHARE = 0.25  # of the budget: from there, the loop looks every WATCH_INTERVAL
FASTEST_GROWTH = 2 * 1024**3  # bytes/s: faster than page faults fill memory (about 1 GiB/s)


@dataclass
class Counters:
    succeeded: int = 0
    quarantined: collections.Counter[str] = field(default_factory=collections.Counter)
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    oom_kills: int = 0
    bystanders: int = 0
    backend_failures: int = 0
    retries: int = 0
    bisections: int = 0
    alone_runs: int = 0
    worker_starts: int = 0
    side_batches: int = 0  # dispatched beside a runaway, held at a ceiling
    side_stalls: int = 0  # of those, found stalled at their ceiling when released

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


class Supervisor:
    def __init__(
        self,
        config: JobConfig,
        source: Source,
        sink: Sink,
        limiter: Limiter,
        run_dir: Path,
        progress: Progress,
        function_spec: str,
        memory: int,
        journal: Journal,
        done: RangeSet | None = None,
        only: RangeSet | None = None,
        fork_server: ForkServer | OSError | None = None,
    ) -> None:
        """``fork_server``: booted by the caller as early as it could (its interpreter
        starts while the run is set up), the error if it could not start, None where
        workers start as fresh interpreters (``start_method = "spawn"``). The caller
        releases it after the run (kept for its next job, engine/forking.py); the
        supervisor closes it only when it is lost."""
        self.config = config
        self.journal = journal
        self.done = done if done is not None else RangeSet()
        self.only = only
        self.source = source
        self.sink = sink
        self.limiter = limiter
        self.run_dir = run_dir
        self.progress = progress
        self.memory = memory
        self.policy = Policy(config.crash_retries, config.error_retries)
        self.counters = Counters()
        self.spec = {
            "function": function_spec,
            "batched": config.batched,
            "encode_json": sink.wants_json,
            "sys_path": [os.getcwd(), *sys.path],
            "trim": config.trim,
            "rlimit_as": config.rlimit_as,
        }
        self.writer: Sink | OrderedWriter = (
            OrderedWriter(sink, self.done) if config.ordered else sink
        )
        self.pending: collections.deque[Batch] = collections.deque()
        self.alone: collections.deque[Batch] = collections.deque()
        self.open_items: list[Item] = []
        self.open_bytes = 0
        self.open_since = 0.0
        self.source_done = False
        self.total: int | None = None
        self.read_up_to = 0  # one past the input index of the last item taken from the reader
        self.usage: int | None = None  # the job's memory, as the last dispatch read it
        self.workers: dict[int, WorkerHandle] = {}
        self.generations: collections.Counter[int] = collections.Counter()
        self.events: list[dict[str, Any]] = []
        self.start_wall = time.time()
        self.start = time.monotonic()
        self.kernel_log: KernelLogTail | None = None  # the run's own kernel log lines
        self.job: MemoryGroup | None = None
        self.monitor: Monitor | None = None
        self.reader: SourceReader | None = None
        self.session = 0
        # batch latency and per-item memory cost, in a fixed budget (12 one-minute windows)
        self.metrics = Registry("4MiB", windows=12, window_seconds=60.0)
        self.exporter: Exporter | None = None
        self.backend: BackendSupervisor | None = None
        # graceful degradation after backend OOMs: fewer in flight, smaller batches
        self.concurrency = Aimd(ceiling=min(config.workers, config.max_in_flight or config.workers))
        self.admission = Admission(
            AdmissionConfig(
                target=config.target,
                high_water=config.high_water,
                psi_some_avg10=config.psi_threshold,
                enabled=config.admission,
                sequential=not config.batched,
                side_share=(1 - config.alone_fraction) / 2,
                side_lane=config.side_lane,
            ),
            memory,
        )
        self.held: Batch | None = None  # formed, but not admitted yet
        self.side_lane_open = False
        self.side_lane_unavailable = False  # a hold failed: no side lane for this run
        # known to need more than the side room: they wait for the runaway to end
        self.set_aside: collections.deque[Batch] = collections.deque()
        # runaways stopped for a bigger one: they run one at a time, after it
        self.suspects: collections.deque[Batch] = collections.deque()
        self.booted = fork_server
        self.fork_server: ForkServer | None = None
        self.recycled = 0
        self.trims = 0
        self.group_restarts = 0
        self.sizer = BatchSizer(
            start=config.batch_size,
            low=config.min_batch_size,
            high=max(config.batch_size, config.max_batch_size)
            if config.adaptive_batch
            else config.batch_size,
            seconds=config.batch_seconds,
            enabled=config.adaptive_batch,
        )
        # the backend's degrade limit (AIMD after a backend OOM) caps whatever the sizer says
        self.batch_limit = Aimd(ceiling=self.sizer.high)
        self.backend_oom_at = 0.0
        self.pressure: tuple[str, str] = ("normal", "")
        self.pressure_checked = 0.0
        self.backend_events_seen: list[dict[str, Any]] = []
        self.last_checkpoint = time.monotonic()
        self.staged_quarantine: list[tuple[int, str, dict[str, Any]]] = []
        self.staged_attempts: list[dict[str, Any]] = []
        self.staged_events: list[dict[str, Any]] = []
        self.quarantine_file = open_private(run_dir / "quarantine.jsonl", "a")
        self.oom_pids: set[int] = set()  # victims the watchdog named
        self.interrupted = False
        self.selector = selectors.DefaultSelector()
        self.failure: str | None = None
        self.failure_error: BaseException | None = None

    # ---------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        """Run to the end; returns the summary (also written to summary.json)."""
        try:
            self.setup()
            self.dispatch()
            while not self.finished():
                self.wait_and_handle()  # it ends with a dispatch
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        except BaseException as err:
            self.failure = f"{type(err).__name__}: {err}"
            self.failure_error = err
            raise
        finally:
            summary = self.teardown()
        return summary

    def setup(self) -> None:
        self.kernel_log = KernelLogTail()
        if isinstance(self.booted, OSError):
            self.fork_server_lost(self.booted)
        else:
            self.fork_server = self.booted  # it boots while the rest is set up; wait_ready() below
        self.session = self.journal.begin_session()
        self.job = self.limiter.create_group("job", self.memory, oom_group=self.config.group)
        capacity = max(256, 4 * self.config.workers * self.config.batch_size)
        every = self.only is None and not self.done.range_count  # a new run: no index to skip
        self.reader = SourceReader(self.source, capacity, None if every else self.wanted)
        self.reader.start()
        threading.Thread(target=self._count_source, name="oomguard-count", daemon=True).start()
        self.monitor = Monitor(
            MemoryLog(self.run_dir / "memory_log.csv", self.config.workers),
            self.job,
            self._worker_views,
            self.in_flight,
            self.config.sample_interval,
            self.config.workers,
        )
        self.monitor.start()
        self.watch(self.limiter.events, "oom")
        self.watch(self.reader, "source")
        if self.config.metrics_port is not None:
            self.exporter = Exporter(
                self.run_numbers, self.metrics, self.config.metrics_port, self.config.metrics_addr
            )
        if self.config.backend is not None:
            self.backend = BackendSupervisor(self.config.backend, self.limiter, self.run_dir)
            self.backend.start()  # blocks until healthy: no work before the backend answers
            self.watch(self.backend.fileno(), "backend")
            self.add_event({"time": time.time(), "event": "backend_ready"})
        if self.fork_server is not None:
            try:
                self.fork_server.wait_ready()
            except (OSError, ForkServerGone) as err:
                self.fork_server_lost(err)
        for slot in range(self.config.workers):
            self.start_slot(slot)
        self.wait_for_first_worker()

    def fork_server_lost(self, err: BaseException) -> None:
        """Without a fork server workers start as fresh interpreters: slower, as good."""
        self.add_event({"time": time.time(), "event": "fork_server_unavailable", "error": str(err)})
        if self.fork_server is not None:
            self.fork_server.close()
        self.fork_server = None

    def wanted(self, index: int) -> bool:
        if self.only is not None:
            return index in self.only
        return index not in self.done

    def _count_source(self) -> None:
        try:
            self.total = self.source.count()
        except Exception:
            self.total = None

    def wait_for_first_worker(self) -> None:
        """Load errors (a function that can't be imported) stop the run before any work."""
        while not any(w.state == "idle" for w in self.workers.values()):
            ready = wait([w.conn for w in self.workers.values()], timeout=120)
            if not ready:
                raise OomguardError("no worker became ready within 120 s")
            for handle in list(self.workers.values()):
                if handle.conn in ready:
                    self.read_messages(handle)

    def finished(self) -> bool:
        return (
            self.source_done
            and self.held is None
            and not self.open_items
            and not self.pending
            and not self.alone
            and not self.set_aside
            and not self.suspects
            and self.in_flight() == 0
        )

    def watch(self, fileobj: Any, what: str, handle: WorkerHandle | None = None) -> None:
        """Add a descriptor to the one epoll set the loop waits on (kept across iterations)."""
        self.selector.register(fileobj, selectors.EVENT_READ, (what, handle))

    def unwatch(self, handle: WorkerHandle) -> None:
        for fileobj in (handle.conn, handle.pidfd):
            try:
                self.selector.unregister(fileobj)
            except (KeyError, ValueError, OSError):
                pass

    def wait_and_handle(self) -> None:
        ready = self.selector.select(self.next_timeout())
        kinds = {key.data[0] for key, _ in ready}
        if "backend" in kinds:
            self.handle_backend_change()
        if "oom" in kinds or self.limiter.events.settle_timeout() is not None:
            self.handle_oom_events()
        for key, _ in ready:
            what, worker = key.data
            if what == "messages" and worker.slot in self.workers:
                self.read_messages(worker)
        for key, _ in ready:
            what, worker = key.data
            if (
                what == "death"
                and self.workers.get(worker.slot, None) is not None
                and self.workers[worker.slot] is worker
            ):
                self.handle_death(worker)
        self.handle_timeouts()
        # idle workers get their next batch before the checkpoint's fsync and the progress
        # line, not after: a worker waits on this loop between batches
        if not self.finished():
            self.dispatch()
        self.maybe_checkpoint()
        self.report_progress()

    def next_timeout(self) -> float:
        now = time.monotonic()
        timeout = 0.5
        deadlines = [w.deadline for w in self.workers.values() if w.deadline is not None]
        if self.open_items:
            deadlines.append(self.open_since + self.config.max_wait_ms / 1000)
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - now))
        settle = self.limiter.events.settle_timeout()
        if settle is not None:
            timeout = min(timeout, settle)
        if self.config.admission and (self.admission.paused or self.in_flight() > 0):
            timeout = min(timeout, self.watch_timeout())
        return timeout

    def watch_timeout(self) -> float:
        """How long the loop may sleep with batches in flight: until they could have grown
        to a quarter of the budget at the fastest a process fills memory, and from there (or
        while intake is paused) ``WATCH_INTERVAL``: runaways are caught, and paused intake
        resumed, by looking often. From the usage this turn's dispatch read (milliseconds
        ago), not the monitor's last sample (up to 0.2 s old)."""
        usage = self.usage
        if self.admission.paused or usage is None:
            return WATCH_INTERVAL
        return max(WATCH_INTERVAL, (BUSY_SHARE * self.memory - usage) / FASTEST_GROWTH)

    def job_usage(self) -> int | None:
        """The job's memory now, read fresh (the monitor's last sample may be 0.2 s old);
        None where it cannot be read."""
        try:
            return self.job.usage() if self.job is not None else None
        except OSError:
            return None

    # ---------------------------------------------------------------- dispatch

    def in_flight(self) -> int:
        return sum(1 for w in self.workers.values() if w.state == "busy")

    def idle_worker(self) -> WorkerHandle | None:
        return next((w for w in self.workers.values() if w.state == "idle"), None)

    def dispatch(self) -> None:
        # the job's usage, read once a loop turn: pressure and runaways judge the same
        # moment, and the loop's next timeout (watch_timeout) is set from it
        usage = self.usage = self.job_usage()
        if self.backend is not None and not self.backend.ready:
            return  # paused: the backend is restarting
        self.check_pressure(usage)
        runaways = self.runaways(usage)
        if len(runaways) > 1 and self.admission.crowded(self.predicted_total()):
            self.one_runaway_at_a_time(runaways)
        if runaways:
            self.dispatch_beside(len(runaways))
            return
        if self.set_aside or any(w.side_share for w in self.workers.values()):
            self.release_holds()
        if self.admission.paused:
            return
        if any(w.state == "busy" and w.attempt_alone for w in self.workers.values()):
            return  # a batch running alone has the whole budget until it ends
        while True:
            worker = self.idle_worker()
            if worker is None:
                return
            in_flight = self.in_flight()
            if self.alone:
                # the whole budget for one batch: wait until nothing else runs
                if in_flight == 0:
                    self.counters.alone_runs += 1
                    self.send_batch(worker, self.alone.popleft(), self.admission.predict(1, 0))
                return
            if in_flight >= self.concurrency.limit:
                return
            batch = self.next_batch()
            if batch is None:
                return
            prediction = max(self.admission.predict_batch(batch), batch.known_cost)
            if not self.admission.admits(self.predicted_total(), prediction, in_flight):
                self.held = batch  # it waits for memory, not for a worker
                return
            self.held = None
            self.send_batch(worker, batch, prediction)

    def runaways(self, job_usage: int | None) -> list[tuple[WorkerHandle, int]]:
        """Busy workers whose batch grew well past its prediction and is growing still, with
        the memory each holds now (``job_usage``: the whole job's, read just before)."""
        found: list[tuple[WorkerHandle, int]] = []
        if job_usage is not None and job_usage <= self.admission.slack:
            return found  # none can have grown past its prediction by the slack
        for handle in self.workers.values():
            if handle.state != "busy" or handle.side_share:
                continue
            try:
                now = handle.group.usage()
            except OSError:
                continue
            if not self.admission.over_prediction(now, handle.usage_at_start, handle.prediction):
                continue
            growth = self.monitor.recent_growth(handle.slot, handle.pid) if self.monitor else None
            if self.admission.still_growing(growth):
                found.append((handle, now))
        return found

    def one_runaway_at_a_time(self, runaways: list[tuple[WorkerHandle, int]]) -> None:
        """Two runaways growing together past the target would each die short of the whole
        budget, and neither death would prove anything: the one holding most goes
        on, the others are stopped and run again, uncounted, when it is over (each knowing
        what it reached)."""
        keep, _ = max(runaways, key=lambda runaway: runaway[1])
        for handle, _ in runaways:
            if handle is not keep and handle.kill_reason is None:
                handle.kill_reason = "preempted"
                handle.proc.kill()
                self.add_event(
                    {
                        "time": time.time(),
                        "event": "runaway_preempted",
                        "worker_pid": handle.pid,
                        "kept_pid": keep.pid,
                    }
                )

    def dispatch_beside(self, runaways: int) -> None:
        """The side lane: batches held at a small ceiling on the cores runaways leave idle."""
        self.preempt_stalled()
        psi = self.monitor.last_psi if self.monitor is not None else None
        if psi is not None and psi >= self.admission.config.psi_some_avg10:
            return  # the machine is short of memory: nothing more, not even held
        cap = self.config.max_in_flight or self.config.workers
        lanes = max(1, (os.cpu_count() or 1) - runaways)
        while True:
            side = [w for w in self.workers.values() if w.side_share and w.state == "busy"]
            share = self.admission.side_room(sum(w.side_share for w in side))
            if len(side) >= lanes or self.in_flight() >= cap or share < SIDE_MINIMUM:
                return
            worker = self.idle_worker()
            if worker is None or not worker.group.can_hold or self.side_lane_unavailable:
                return
            batch = self.next_batch()
            if batch is None:
                return
            self.held = None
            if batch.alone or batch.known_cost > share:
                self.set_aside.append(batch)  # known to need more
                continue
            if not self.admission.likely_fits_beside(batch, share):
                self.held = batch  # batches like it most likely need more: no side lane
                return
            try:
                worker.group.hold(worker.group.usage() + share)
            except (OSError, CgroupError) as err:
                self.held = batch
                self.side_lane_unavailable = True
                self.add_event({"time": time.time(), "event": "side_lane", "error": str(err)})
                return
            if not self.side_lane_open:
                self.side_lane_open = True
                self.add_event({"time": time.time(), "event": "side_lane", "open": True})
            self.counters.side_batches += 1
            self.send_batch(worker, batch, share, held=share)

    def preempt_stalled(self) -> None:
        """A held batch stalled at its ceiling needs more than the side room: stop it, so
        the room goes to another batch; it runs again, uncounted, once the runaway is over."""
        for handle in self.workers.values():
            if (
                handle.side_share
                and handle.state == "busy"
                and handle.kill_reason is None
                and handle.group.stalled()
            ):
                handle.kill_reason = "preempted"
                handle.proc.kill()

    def release_holds(self) -> None:
        """No runaway left: held workers get their own limit back, stalled ones go on, and
        batches set aside for the runaway's end come first."""
        now = time.monotonic()
        stalled = 0
        for handle in self.workers.values():
            if not handle.side_share:
                continue
            if handle.group.stalled():
                stalled += 1
            try:
                handle.group.release()
            except OSError:
                pass  # its cgroup is gone with it: its death is being handled
            if handle.deadline is not None:
                handle.deadline += now - handle.side_since  # a stall is not the batch's time
            if handle.state == "busy" and handle.batch is not None:
                handle.prediction = max(
                    handle.side_share,
                    self.admission.predict_batch(handle.batch),
                    handle.batch.known_cost,
                )
            handle.side_share = 0
        self.counters.side_stalls += stalled
        while self.set_aside:
            batch = self.set_aside.pop()
            (self.suspects if batch.suspect else self.pending).appendleft(batch)
        if self.side_lane_open:
            self.side_lane_open = False
            self.add_event(
                {"time": time.time(), "event": "side_lane", "open": False, "stalled": stalled}
            )

    def next_batch(self) -> Batch | None:
        if self.held is not None:
            return self.held
        if self.suspects and not any(
            w.state == "busy" and w.batch is not None and w.batch.suspect
            for w in self.workers.values()
        ):
            return self.suspects.popleft()
        if self.pending:
            return self.pending.popleft()
        return self.take_new_batch()

    def predicted_total(self) -> int:
        """Idle workers' memory now, plus what each busy worker is expected to hold: its start
        memory and predicted cost, or what it holds now when it has already grown past that
        (a batch bigger than predicted claims what it took, so the rest is not promised twice)."""
        total = 0
        for handle in self.workers.values():
            try:
                now = handle.group.usage()
            except OSError:
                now = 0
            if handle.state == "busy":
                total += max(handle.usage_at_start + handle.prediction, now)
            else:
                total += now
        return total

    def check_pressure(self, job_usage: int | None) -> None:
        """Pause or resume intake on ``job_usage``, read fresh: a killed worker's memory goes
        within milliseconds, and a runaway's comes as fast."""
        monitor = self.monitor
        if monitor is None or not self.config.admission:
            return
        usage = job_usage if job_usage is not None else monitor.last_cgroup
        change = self.admission.update_pressure(usage, monitor.last_psi)
        if change is not None:
            self.add_event(
                {
                    "time": time.time(),
                    "event": change,
                    "usage_mb": mib(usage),
                    "psi_some_avg10": monitor.last_psi,
                }
            )

    def take_new_batch(self) -> Batch | None:
        """Fill the open batch from the reader; hand it out when full, old or final."""
        assert self.reader is not None
        self.reader.drain_wakeups()
        config = self.config
        batch_size = min(self.batch_limit.limit, self.adaptive_size())
        left = self.items_left()
        if left is not None:  # at most an equal share of what is left
            batch_size = min(batch_size, self.sizer.share(self.sizer.high, left, config.workers))
        while not self.source_done and len(self.open_items) < batch_size:
            try:
                taken = self.reader.take(batch_size - len(self.open_items))
            except queue.Empty:
                self.reader.waiting.set()
                if not self.reader.empty():
                    continue
                break
            for position, item in enumerate(taken):
                if item is END:
                    self.source_done = True
                    if self.reader.error is not None:
                        raise OomguardError(
                            f"reading {self.source.description} failed: {self.reader.error}"
                        )
                    break
                self.read_up_to = item.index + 1
                if item.error is not None:
                    self.quarantine_item(item, Status.ERROR, {"message": item.error})
                    continue
                if self.open_items and self.open_bytes + item.size > config.max_bytes:
                    self.reader.give_back(taken[position + 1 :])
                    batch = self.close_open_batch()
                    self.open_items, self.open_bytes, self.open_since = (
                        [item],
                        item.size,
                        time.monotonic(),
                    )
                    return batch
                if not self.open_items:
                    self.open_since = time.monotonic()
                self.open_items.append(item)
                self.open_bytes += item.size
        if not self.open_items:
            return None
        full = len(self.open_items) >= batch_size or self.open_bytes >= config.max_bytes
        old = time.monotonic() - self.open_since >= config.max_wait_ms / 1000
        if self.source_done:  # exhausted (perhaps during this fill): the open items are all left
            batch_size = self.sizer.share(batch_size, len(self.open_items), config.workers)
        if full or old or self.source_done:
            return self.close_open_batch(batch_size)
        return None

    def items_left(self) -> int | None:
        """Items not handed out in a batch yet (the sizer shares them out, batch_size.py
        "the end"): the open ones once the source is exhausted, else from the source's
        count (a resumed run's includes items done before, so its batches shrink a little
        late); None where unknown, or where the source outgrew its count (a directory
        that gained files, a ``len()`` that was wrong)."""
        if self.source_done:
            return len(self.open_items)
        if self.total is None or self.read_up_to > self.total:
            return None
        return self.total - self.read_up_to + len(self.open_items)

    def adaptive_size(self) -> int:
        """The sizer's size, cut to the items whose predicted peak fits the room left now."""
        if not self.sizer.enabled or self.admission.config.sequential:
            return self.sizer.size  # one item at a time: a longer batch needs no more memory
        per_item = self.admission.costs.per_item()
        room = int(self.admission.config.target * self.memory) - self.predicted_total()
        return self.sizer.fitting(per_item, max(0, room))

    def close_open_batch(self, limit: int | None = None) -> Batch:
        """The open items as a batch (the first ``limit`` of them; the rest stay open)."""
        if limit is None or len(self.open_items) <= limit:
            batch = Batch(self.open_items)
            self.open_items, self.open_bytes = [], 0
            return batch
        batch = Batch(self.open_items[:limit])
        self.open_items = self.open_items[limit:]
        self.open_bytes = sum(item.size for item in self.open_items)
        return batch

    def send_batch(
        self, worker: WorkerHandle, batch: Batch, prediction: int = 0, held: int = 0
    ) -> None:
        """Start ``batch`` on ``worker``; ``held``: the worker is held (the side lane) at its
        memory now plus this many bytes."""
        batch.attempt += 1
        worker.ticket = self.concurrency.ticket()
        worker.prediction = prediction
        worker.reset_batch()
        worker.batch = batch
        worker.state = "busy"
        worker.started_at = time.monotonic()
        worker.started_wall = time.time()
        worker.attempt_alone = batch.alone
        if self.config.timeout is not None:
            worker.deadline = worker.started_at + self.config.timeout
        try:
            worker.group.reset_peak()
            worker.usage_at_start = worker.group.usage()
        except OSError:
            worker.usage_at_start = 0
        if held:
            worker.side_share, worker.side_since = held, time.monotonic()
        try:
            extra = {"pressure": self.current_pressure(), "attempt": batch.attempt}
            worker.conn.send(
                ("batch", batch.batch_id, [(i.index, i.value) for i in batch.items], extra)
            )
        except (BrokenPipeError, ConnectionResetError):
            pass  # it is dying: its pidfd will tell, and the batch is retried uncounted

    # ---------------------------------------------------------------- workers

    def start_slot(self, slot: int) -> None:
        assert self.job is not None
        self.generations[slot] += 1
        start = functools.partial(
            start_worker,
            self.limiter,
            self.job,
            slot,
            self.generations[slot],
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
        self.watch(handle.conn, "messages", handle)
        self.watch(handle.pidfd, "death", handle)
        self.counters.worker_starts += 1

    def _worker_views(self) -> list[WorkerView]:
        return [WorkerView(w.slot, w.pid, w.group) for w in list(self.workers.values())]

    def read_messages(self, handle: WorkerHandle) -> None:
        # a poll object made once per worker: Connection.poll() builds a selector per call
        poll = handle.poller.poll
        try:
            while poll(0):
                self.handle_message(handle, handle.conn.recv())
        except (EOFError, OSError):
            pass  # the worker is gone; handle_death takes it from here

    def handle_message(self, handle: WorkerHandle, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "items":
            _, batch_id, indices, results, failures = message
            if handle.batch is not None and batch_id == handle.batch.batch_id:
                self.take_results(handle, indices, results, failures)
        elif kind == "done":
            _, batch_id, indices, results, failures, stats = message
            if handle.batch is not None and batch_id == handle.batch.batch_id:
                self.take_results(handle, indices, results, failures)
                self.finish_batch(handle, stats)
        elif kind == "batch_error":
            _, batch_id, status, error = message
            if handle.batch is not None and batch_id == handle.batch.batch_id:
                handle.batch_failure = (status, error)
        elif kind == "ready":
            handle.state = "idle"
        elif kind == "fatal":
            raise ConfigError(message[1])

    @staticmethod
    def take_results(
        handle: WorkerHandle,
        indices: list[int],
        results: str | list[Any],
        failures: list[Failure],
    ) -> None:
        """A group of results (worker.py): kept whole, written at the batch's end."""
        handle.reported.update(indices)
        if indices:
            handle.results.append(
                Results(indices, lines=results)
                if isinstance(results, str)
                else Results(indices, values=results)
            )
        if failures:
            handle.reported.update(index for index, _, _ in failures)
            handle.item_failures.extend(failures)

    def finish_batch(self, handle: WorkerHandle, stats: dict[str, int]) -> None:
        """A batch came back (the worker lives): write results, route failed items."""
        batch = handle.batch
        assert batch is not None
        peak = self.batch_peak(handle)
        if handle.batch_failure is not None and self.is_backend_failure(handle.batch_failure[1]):
            self.backend_failed_batch(handle, batch, handle.batch_failure[1], peak)
            return
        if handle.batch_failure is not None:
            status, error = handle.batch_failure
            self.record_attempt(handle, Status(status), peak, error=error)
            handle.reset_batch()
            handle.state = "idle"
            self.apply(
                after_failure(batch, Status(status), died_alone=False, policy=self.policy),
                Status(status),
                error,
            )
            return
        self.commit(handle.results)
        worst = Status.SUCCESS
        backend_lost = [f for f in handle.item_failures if self.is_backend_failure(f[2])]
        if backend_lost:
            lost = {index for index, _, _ in backend_lost}
            self.apply(
                retry_uncounted(batch.only([i for i in batch.items if i.index in lost])),
                Status.BACKEND_FAILURE,
                backend_lost[0][2],
            )
            self.counters.backend_failures += len(lost)
            assert self.backend is not None
            self.backend.report_failure(str(backend_lost[0][2].get("message", "")))
            worst = Status.BACKEND_FAILURE
        for index, status, error in handle.item_failures:
            if worst is Status.BACKEND_FAILURE and any(index == b[0] for b in backend_lost):
                continue
            item = next(i for i in batch.items if i.index == index)
            failure = Status(status)
            worst = failure if worst is Status.SUCCESS else worst
            single = single_item_batch(batch, item)
            self.apply(
                after_failure(single, failure, died_alone=False, policy=self.policy), failure, error
            )
        first_error = handle.item_failures[0][2] if handle.item_failures else None
        self.record_attempt(handle, worst, peak, error=first_error, stats=stats)
        handle.batches_done += 1
        if handle.side_share:
            self.admission.side_useful += time.monotonic() - handle.started_at
        if worst is Status.SUCCESS:
            if peak is not None:
                self.admission.learn(batch, max(0, peak - handle.usage_at_start))
            self.adapt_batch_size(batch, time.monotonic() - handle.started_at)
            self.concurrency.success()
            if self.backend is not None:
                self.batch_limit.success()
        self.trims += bool(stats.get("trimmed"))
        handle.reset_batch()
        handle.state = "idle"
        self.maybe_recycle(handle, stats)

    def adapt_batch_size(self, batch: Batch, seconds: float) -> None:
        if not self.sizer.enabled:
            return
        doubled = self.admission.predict_batch(batch, times=2)
        target = self.admission.config.target * self.memory
        plentiful = self.predicted_total() + doubled <= 0.5 * target
        size = self.sizer.after_batch(len(batch.items), seconds, plentiful)
        if size is not None:
            self.add_event({"time": time.time(), "event": "batch_size", "batch_size": size})

    def maybe_recycle(self, handle: WorkerHandle, stats: dict[str, int]) -> None:
        """Retire a worker that did its share, or whose idle RSS grew (loky's leak check)."""
        rss = int(stats.get("rss_after", 0))
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
        handle.state = "retiring"
        self.recycled += 1
        self.add_event(
            {"time": time.time(), "event": "recycle", "worker_pid": handle.pid, "reason": reason}
        )
        try:
            handle.conn.send(("stop",))
        except OSError:
            handle.proc.kill()

    def handle_death(self, handle: WorkerHandle) -> None:
        """The pidfd says the worker is gone: classify, recover its batch, replace it."""
        self.read_messages(handle)  # what it said before dying still counts
        handle.proc.wait()
        batch = handle.batch
        status, evidence = self.classify_death(handle)
        if status is Status.OOM_KILLED and self.config.group and not handle.group_restarted:
            victim = kernel_victim(handle, self.workers.values())  # v2: the kernel took all
            if victim is not handle:
                self.restart_group(victim)
                status, evidence = self.classify_death(handle)
        peak = self.batch_peak(handle)
        del self.workers[handle.slot]
        if batch is not None and handle.state == "busy":
            died_alone = peak is not None and peak >= self.config.alone_fraction * self.room_for(
                handle
            )
            bystander = status is Status.OOM_KILLED and (
                bool(handle.side_share)  # held beside a runaway: its death says nothing of it
                or (not died_alone and not batch.alone and self.is_bystander(handle))
            )
            own_cap = handle.group.limit  # worker_memory: a cap of its own inside the job's
            at_own_cap = own_cap is not None and peak is not None and peak >= 0.95 * own_cap
            evidence["peak_mb"] = mib(peak) if peak is not None else None
            evidence["died_alone"] = died_alone
            if own_cap is not None:
                evidence["at_worker_cap"] = at_own_cap
            self.record_attempt(handle, status, peak, evidence=evidence, bystander=bystander)
            self.commit(handle.results)
            if status is Status.OOM_KILLED:
                self.counters.oom_kills += 1
                if peak is not None:  # its retry is admitted only where this much fits
                    batch.known_cost = max(batch.known_cost, peak - handle.usage_at_start)
                # too many at once (not one item too big for any budget, nor a worker at
                # its own worker_memory cap, with the job's room to spare): fewer in flight
                if not bystander and not died_alone and not at_own_cap:
                    limit = self.concurrency.decrease(handle.ticket)
                    if limit is not None:
                        self.add_event(
                            {"time": time.time(), "event": "concurrency", "in_flight_limit": limit}
                        )
            if handle.kill_reason == "preempted":
                self.requeue_preempted(handle, batch, peak)
            elif handle.kill_reason == "group":
                self.settle_reported_failures(handle, batch)
                self.requeue_unreported(handle, batch, Status.WORKER_CRASH, evidence)
            else:
                self.recover(
                    handle, batch, status, evidence, died_alone=died_alone, bystander=bystander
                )
            if (
                status is Status.OOM_KILLED
                and self.config.group
                and handle.kill_reason != "group"
                and not handle.group_restarted
            ):
                self.restart_group(handle)
        elif status is Status.OOM_KILLED:
            self.counters.oom_kills += 1
        if handle.state == "starting" and handle.batch is None and status is Status.WORKER_CRASH:
            self.add_event({"time": time.time(), "event": "worker_failed_to_start", **evidence})
        self.unwatch(handle)
        close_worker(handle)
        if not self.finished():
            self.start_slot(handle.slot)

    def restart_group(self, victim: WorkerHandle) -> None:
        """seeds/004: one member OOM-killed, the whole group goes and comes back together."""
        self.group_restarts += 1
        victim.group_restarted = True
        self.add_event({"time": time.time(), "event": "group_restart", "victim_pid": victim.pid})
        for other in list(self.workers.values()):
            if other is not victim and other.kill_reason is None:
                other.kill_reason = "group"  # killed by the kernel already (v2), or now
                if other.proc.poll() is None:
                    other.proc.kill()

    def classify_death(self, handle: WorkerHandle) -> tuple[Status, dict[str, Any]]:
        code = handle.proc.returncode
        evidence: dict[str, Any] = {"worker_pid": handle.pid, "returncode": code}
        if code is not None and code < 0:
            evidence["signal"] = -code
        if handle.kill_reason == "group":
            evidence["group_restart"] = True
            return Status.WORKER_CRASH, evidence
        if handle.kill_reason == "preempted":
            return Status.PREEMPTED, evidence
        if handle.kill_reason == "timeout":
            evidence["timeout_sec"] = self.config.timeout
            return Status.TIMEOUT, evidence
        try:
            kills = handle.group.read().oom_kill - handle.oom_baseline
        except OSError:
            kills = 0
        if handle.oom_event or kills > 0 or handle.pid in self.oom_pids:
            evidence["enforcer"] = self.limiter.kind
            evidence["oom_kill_count"] = max(kills, 1)
            evidence["job_cap_mb"] = mib(self.memory)
            kernel = self.kernel_evidence(handle.pid)
            if kernel:
                evidence["kernel_log"] = kernel
            return Status.OOM_KILLED, evidence
        return Status.WORKER_CRASH, evidence

    def kernel_evidence(self, pid: int) -> list[str]:
        """The kernel's lines on the kill of ``pid``: from the run's own lines where
        /dev/kmsg can be read (milliseconds saved per death), else from the whole log."""
        lines = self.kernel_log.read() if self.kernel_log is not None else None
        if lines is None:
            lines = read_kernel_log()
        if lines is None:
            return []
        for kill in reversed(find_oom_kills(lines[-400:])):
            if kill.pid == pid:
                return list(kill.lines)
        return []

    def batch_peak(self, handle: WorkerHandle) -> int | None:
        try:
            return handle.group.peak()
        except OSError:
            return None

    def room_for(self, victim: WorkerHandle) -> int:
        """The budget less the other workers' baselines: what the victim could ever have had.

        Baselines only (a busy worker's memory when its batch started, an idle one's now):
        a worker that died next to another big batch did not have the budget to itself, and
        is retried alone rather than quarantined. One that died holding nearly all of this
        had it in effect: its item is bigger than the budget, and it is quarantined at its
        first death without draining the pool.
        """
        others = 0
        for other in self.workers.values():
            if other is victim:
                continue
            if other.state == "busy":
                others += other.usage_at_start
                continue
            try:
                others += other.group.usage()
            except OSError:
                continue
        return max(1, self.memory - others)

    def is_bystander(self, victim: WorkerHandle) -> bool:
        """Was another in-flight batch the one growing when the victim was killed?"""
        assert self.monitor is not None
        victim_growth = self.monitor.recent_growth(victim.slot, victim.pid)
        if victim_growth is None:
            return False
        for other in self.workers.values():
            if other is victim or other.state != "busy":
                continue
            growth = self.monitor.recent_growth(other.slot, other.pid)
            if growth is not None and growth > max(victim_growth, 0) + 16 * 1024 * 1024:
                return True
        return False

    def recover(
        self,
        handle: WorkerHandle,
        batch: Batch,
        status: Status,
        evidence: dict[str, Any],
        *,
        died_alone: bool,
        bystander: bool,
    ) -> None:
        self.settle_reported_failures(handle, batch)
        if bystander:
            self.counters.bystanders += 1
            self.requeue_unreported(handle, batch, status, evidence)
            return
        blamed, innocent = self.blame(handle, batch)
        if innocent is not None:
            self.apply(retry_uncounted(innocent), status, evidence)
        if blamed is not None:
            self.apply(
                after_failure(blamed, status, died_alone=died_alone, policy=self.policy),
                status,
                evidence,
            )

    def blame(self, handle: WorkerHandle, batch: Batch) -> tuple[Batch | None, Batch | None]:
        """A dead worker's batch as (the part to blame, the innocent rest), unreported items
        only (what was reported is settled). A batched function's whole batch is to blame; a
        per-item one's running item, named by the shared slot, or, when every item had
        finished (the death came while reporting), the unreported rest with its history."""
        if self.config.batched:
            return batch, None
        if handle.items_over():
            unreported = [i for i in batch.items if i.index not in handle.reported]
            if not unreported:
                return None, None
            history = {"memory_deaths": batch.memory_deaths, "alone": batch.alone}
            return batch.only(unreported, **history), None
        pinned, others = pin_item(batch, handle.reported, handle.running_item())
        blamed = single_item_batch(batch, pinned) if pinned is not None else None
        return blamed, batch.only(others) if others else None

    def requeue_unreported(
        self, handle: WorkerHandle, batch: Batch, status: Status, evidence: dict[str, Any]
    ) -> None:
        """What the worker had not reported goes back to the queue, its history unchanged
        (what it reported is in the sink already: running it again would duplicate it)."""
        remaining = [i for i in batch.items if i.index not in handle.reported]
        if remaining:
            retry = batch if len(remaining) == len(batch.items) else batch.only(remaining)
            self.apply(retry_uncounted(retry), status, evidence)

    def settle_reported_failures(self, handle: WorkerHandle, batch: Batch) -> None:
        """Per-item failures the worker reported before it died, settled one by one."""
        for index, failure, error in handle.item_failures:
            item = next(i for i in batch.items if i.index == index)
            self.apply(
                after_failure(
                    single_item_batch(batch, item),
                    Status(failure),
                    died_alone=False,
                    policy=self.policy,
                ),
                Status(failure),
                error,
            )
        handle.item_failures = []

    def requeue_preempted(self, handle: WorkerHandle, batch: Batch, peak: int | None) -> None:
        """A stopped batch (a held one stalled at its ceiling, or the smaller of two runaways)
        goes back to the queue uncounted; the part to blame is known to need more than it
        reached, so it waits for the runaway to end."""
        self.settle_reported_failures(handle, batch)
        if handle.side_share:
            self.admission.side_wasted += time.monotonic() - handle.started_at
        # more than the room it stalled in (strictly: the same room would stall it again)
        needed = max(batch.known_cost, handle.side_share + 1, (peak or 0) - handle.usage_at_start)
        evidence = {"worker_pid": handle.pid, "side_share_mb": mib(handle.side_share)}
        blamed, innocent = self.blame(handle, batch)
        if innocent is not None:
            self.apply(retry_uncounted(innocent), Status.PREEMPTED, evidence)
        if blamed is None:
            return
        blamed.known_cost = max(blamed.known_cost, needed)
        if handle.side_share:
            self.apply(retry_uncounted(blamed), Status.PREEMPTED, evidence)
        else:
            # a runaway stopped for a bigger one: beside another such, it would grow into
            # it before either looked like a runaway (each is admitted at what it reached)
            blamed.suspect = True
            self.suspects.append(blamed)

    def apply(self, decision: Decision, status: Status, evidence: dict[str, Any]) -> None:
        for batch in reversed(decision.retry):
            self.pending.appendleft(batch)
        self.alone.extend(decision.alone)
        if decision.action in ("retry", "retry_bystander"):
            self.counters.retries += 1
        elif decision.action == "bisect":
            self.counters.bisections += 1
        for item in decision.quarantine:
            self.quarantine_item(item, status, evidence)

    def is_backend_failure(self, error: dict[str, Any] | None) -> bool:
        if self.backend is None or not error:
            return False
        return means_backend_failure(f"{error.get('type', '')}: {error.get('message', '')}") or (
            Status.MEMORY_ERROR is classify_text(error)
        )

    def backend_failed_batch(
        self, handle: WorkerHandle, batch: Batch, error: dict[str, Any], peak: int | None
    ) -> None:
        """The whole batch failed because the backend did: requeue it, uncounted."""
        self.record_attempt(handle, Status.BACKEND_FAILURE, peak, error=error)
        handle.reset_batch()
        handle.state = "idle"
        self.apply(retry_uncounted(batch), Status.BACKEND_FAILURE, error)
        self.counters.backend_failures += len(batch.items)
        assert self.backend is not None
        self.backend.report_failure(str(error.get("message", "")))

    def handle_backend_change(self) -> None:
        backend = self.backend
        assert backend is not None
        backend.drain()
        for event in backend.recent_events()[len(self.backend_events_seen) :]:
            self.backend_events_seen.append(event)
            self.add_event(event)
            if event["event"] == "backend_oom_killed":
                self.backend_oom_at = time.monotonic()
                self.concurrency.decrease()
                self.batch_limit.decrease()
                self.add_event(
                    {
                        "time": time.time(),
                        "event": "degrade",
                        "in_flight_limit": self.concurrency.limit,
                        "batch_size": self.batch_limit.limit,
                    }
                )
        if backend.state == "failed":
            raise BackendFailed(backend.failure or "the backend failed")

    def current_pressure(self) -> tuple[str, str]:
        now = time.monotonic()
        if now - self.pressure_checked >= 1.0:
            self.pressure_checked = now
            recent = self.backend_oom_at > 0 and now - self.backend_oom_at < 60
            pressure = assess(read_system_memory(), read_gpus(), backend_oom_recently=recent)
            self.pressure = (pressure.level, pressure.reason)
        return self.pressure

    def handle_oom_events(self) -> None:
        events: list[OomEvent] = self.limiter.events.drain()
        by_key = {w.group.key: w for w in self.workers.values()}
        for event in events:
            if event.pid is not None:
                self.oom_pids.add(event.pid)
            handle = by_key.get(event.group)
            if handle is not None:
                handle.oom_event = True
            self.add_event(
                {
                    "time": event.time,
                    "event": "oom_kill",
                    "group": event.group,
                    "source": event.source,
                }
            )

    def handle_timeouts(self) -> None:
        now = time.monotonic()
        for handle in list(self.workers.values()):
            if (
                handle.deadline is not None
                and now >= handle.deadline
                and handle.kill_reason is None
                and not handle.side_share  # a held batch may be stalled: its clock runs on release
            ):
                handle.kill_reason = "timeout"
                handle.proc.kill()

    # ---------------------------------------------------------------- results

    def commit(self, results: list[Results]) -> None:
        if not results:
            return
        self.writer.write(results)  # in input order within the batch, as the worker ran them
        self.counters.succeeded += sum(map(len, results))

    def quarantine_item(self, item: Item, status: Status, evidence: dict[str, Any]) -> None:
        self.staged_quarantine.append((item.index, str(status), evidence))
        self.counters.quarantined[str(status)] += 1
        if isinstance(self.writer, OrderedWriter):
            self.writer.skip(item.index)

    def record_attempt(
        self,
        handle: WorkerHandle,
        status: Status,
        peak: int | None,
        *,
        error: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
        stats: dict[str, int] | None = None,
        bystander: bool = False,
    ) -> None:
        assert handle.batch is not None
        end = time.time()
        entry = attempt_entry(
            handle,
            status,
            peak,
            end,
            error=error,
            evidence=evidence,
            stats=stats,
            bystander=bystander,
        )
        self.staged_attempts.append(entry)
        self.counters.attempts[str(status)] += 1
        self.metrics.record(BATCH_SECONDS, end - handle.started_wall)
        items = handle.batch.items
        if status is Status.SUCCESS and peak is not None and items:
            self.metrics.record(
                "item_cost_bytes", max(0, peak - handle.usage_at_start) / len(items)
            )

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        del self.events[:-200]
        self.staged_events.append(event)

    def maybe_checkpoint(self, final: bool = False) -> None:
        """Make results durable and journal them with everything else, in one transaction."""
        if not final and time.monotonic() - self.last_checkpoint < self.config.commit_interval:
            return
        self.last_checkpoint = time.monotonic()
        prepared = self.sink.prepare(final)
        if not (prepared or self.staged_quarantine or self.staged_attempts or self.staged_events):
            return
        quarantined = self.staged_quarantine
        self.journal.checkpoint(
            Checkpoint(
                committed=prepared.indices if prepared else [],
                token=prepared.token if prepared else None,
                quarantined=quarantined,
                attempts=self.staged_attempts,
                events=self.staged_events,
            )
        )
        self.staged_quarantine, self.staged_attempts, self.staged_events = [], [], []
        if prepared:
            self.sink.commit(prepared)
        for index, status, evidence in quarantined:
            self.quarantine_file.write(
                json.dumps(
                    {"input_index": index, "status": status, "evidence": evidence}, default=str
                )
                + "\n"
            )
        self.quarantine_file.flush()

    # ---------------------------------------------------------------- progress and end

    def snapshot(self) -> Snapshot:
        assert self.monitor is not None
        return Snapshot(
            done=self.counters.succeeded + self.counters.quarantined_total,
            total=self.total,
            succeeded=self.counters.succeeded,
            quarantined=self.counters.quarantined_total,
            in_flight=self.in_flight(),
            oom_kills=self.counters.oom_kills,
            memory_used=self.monitor.last_cgroup,
            memory_cap=self.memory,
            elapsed=time.monotonic() - self.start,
        )

    def run_numbers(self) -> RunNumbers:
        """For the Prometheus exporter (called from its thread: reads only)."""
        monitor = self.monitor
        workers = 0
        if monitor is not None:
            for view in self._worker_views():
                try:
                    workers += view.group.read().usage
                except OSError:
                    continue
        supervisor = own_rss()
        return RunNumbers(
            items={"success": self.counters.succeeded, **self.counters.quarantined},
            oom_kills=self.counters.oom_kills,
            job_bytes=monitor.last_cgroup if monitor else 0,
            worker_bytes=workers,
            supervisor_bytes=supervisor,
            budget_bytes=self.memory,
            backend_restarts=self.backend.restarts if self.backend is not None else 0,
        )

    def report_progress(self) -> None:
        if self.progress.due():  # a snapshot costs tens of microseconds: only when shown
            self.progress.update(self.snapshot())

    def stop_workers(self) -> None:
        for handle in list(self.workers.values()):
            try:
                handle.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for handle in list(self.workers.values()):
            try:
                handle.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                handle.proc.kill()
            self.unwatch(handle)
            close_worker(handle)
        self.workers.clear()

    def teardown(self) -> dict[str, Any]:
        end_wall = time.time()
        if self.exporter is not None:
            self.exporter.close()
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                pass
        for step in (self.stop_workers, self._stop_reader):
            try:
                step()
            except Exception:
                pass
        if self.monitor is not None:
            self.monitor.stop()
        self.selector.close()
        job_reading = None
        if self.job is not None:
            try:
                job_reading = self.job.read()
            except OSError:
                pass
        if not isinstance(self.failure_error, SinkError):
            try:
                self.maybe_checkpoint(final=True)
            except SinkError as err:
                self.failure = self.failure or f"{type(err).__name__}: {err}"
                self.failure_error = err
        for closer in (self.sink.close, self.quarantine_file.close):
            try:
                closer()
            except Exception:
                pass
        write_manifest(self.journal, self.run_dir / "ingest_manifest.json")
        dmesg = write_dmesg_excerpt(
            self.run_dir / "dmesg_excerpt.txt", self.start_wall, end_wall, self.kernel_log
        )
        if self.kernel_log is not None:
            self.kernel_log.close()
        summary = self.summary(end_wall, job_reading, dmesg)
        write_json(self.run_dir / "summary.json", summary)
        self.journal.end_session(self.session, summary["status"])
        finished = not self.interrupted and self.failure is None
        snapshot = self.snapshot() if self.monitor else _empty_snapshot(self.memory)
        self.progress.close(snapshot, finished=finished)
        return summary

    def _quantiles(self, label: str, scale: float) -> dict[str, float] | None:
        return quantile_dict(self.metrics, label, scale)

    def _stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def summary(self, end_wall: float, job_reading: Any, dmesg: bool) -> dict[str, Any]:
        duration = end_wall - self.start_wall
        monitor = self.monitor
        peak_cgroup = monitor.peak_cgroup if monitor else 0
        if job_reading is not None and job_reading.peak is not None:
            peak_cgroup = max(peak_cgroup, job_reading.peak)
        quarantine_counts = self.journal.quarantine_counts()
        counts = {"success": self.journal.committed_count(), **quarantine_counts}
        done = sum(counts.values())
        return {
            "status": "interrupted"
            if self.interrupted
            else "failed"
            if self.failure
            else "finished",
            "failure": self.failure,
            "function": self.spec["function"],
            "source": self.source.description,
            "items_total": done,
            "counts": counts,
            "quarantined": sum(quarantine_counts.values()),
            "attempts": self.journal.attempt_counts(),
            "sessions": len(self.journal.sessions()),
            "retries": self.counters.retries,
            "bisections": self.counters.bisections,
            "alone_runs": self.counters.alone_runs,
            "side_lane": {
                "batches": self.counters.side_batches,
                "stalled": self.counters.side_stalls,
            },
            "bystanders": self.counters.bystanders,
            "worker_starts": self.counters.worker_starts,
            "peak_rss_mb": mib(monitor.peak_rss) if monitor else None,
            "peak_cgroup_mb": mib(peak_cgroup),
            "peak_gpu_mb": mib(monitor.peak_gpu) if monitor and monitor.peak_gpu else None,
            "cap_mb": mib(self.memory),
            "peak_percent_of_cap": round(100 * peak_cgroup / self.memory, 1),
            "duration_sec": round(duration, 3),
            "throughput_items_per_sec": round(
                (self.counters.succeeded + self.counters.quarantined_total) / duration, 2
            )
            if duration > 0
            else None,
            "samples": monitor.samples if monitor else 0,
            "cgroup_events": {
                "oom_kill": self.counters.oom_kills,
                "job_oom_kill": job_reading.oom_kill if job_reading is not None else None,
                "job_oom_group_kill": job_reading.oom_group_kill if job_reading else None,
            },
            "enforcement": self.limiter.kind,
            "enforcement_reason": self.limiter.reason,
            "workers": self.config.workers,
            "batch_size": self.config.batch_size,
            "dmesg_excerpt": dmesg,
            "batch_seconds": self._quantiles(BATCH_SECONDS, 1.0),
            "item_cost_mb": self._quantiles("item_cost_bytes", 1 / 2**20),
            "metrics_bytes": self.metrics.memory_bytes(),
            "admission": {
                "enabled": self.config.admission,
                "target": self.config.target,
                "pauses": self.admission.pauses,
                "in_flight_limit": self.concurrency.limit,
                "cost_observations": self.admission.costs.observed,
            },
            "recycled_workers": self.recycled,
            "malloc_trims": self.trims,
            "group_restarts": self.group_restarts,
            "backend": None
            if self.backend is None
            else {
                "restarts": self.backend.restarts,
                "oom_kills": self.backend.oom_kills,
                "failed_requests_requeued": self.counters.backend_failures,
                "failure": self.backend.failure,
            },
            "events": self.events[-200:],
        }


def _empty_snapshot(memory: int) -> Snapshot:
    return Snapshot(0, None, 0, 0, 0, 0, 0, memory, 0.0)
