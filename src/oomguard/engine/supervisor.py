"""The supervisor: one loop around one wait; each ready event goes to the part that owns it.

::

    source ─► reader thread ─► Intake (open batch; pending, alone, suspects, set aside)
                                  │ next_batch()
                                  ▼
                Dispatch (admission, the intake pause, AIMD) ──► Runaways (side lane)
                                  │ send()
                                  ▼
                WorkerPool: a worker per slot, in its own cgroup
                                  │ messages, pidfd (death), OOM events, timeouts
                                  ▼
                Outcomes: a finished batch, or a death ─► verdict ─► recovery ladder
                                  │                                       │ Decision
                                  ▼                                       ▼
                Ledger: sink, quarantine, attempts, events ─► journal   Intake

    BackendLink: the model backend's state, the pressure level sent with each batch
    RunSummary: progress snapshots, the exporter's numbers, summary.json

The supervisor owns no policy and no queue. It sets the parts up, waits on every
descriptor at once (workers' pipes and pidfds, the OOM event source, the reader's
wake-up pipe, the backend's state pipe) with a timeout that is the nearest deadline, hands
each ready event to its owner in a fixed order (backend, OOM events, messages, deaths,
timeouts), gives idle workers work, checkpoints and reports progress; and at the end it
tears everything down and writes what the run leaves.
"""

from __future__ import annotations

import os
import selectors
import sys
import time
from pathlib import Path
from typing import Any

from oomguard.engine.admission import Admission, AdmissionConfig
from oomguard.engine.aimd import Aimd
from oomguard.engine.artifacts import MemoryLog, write_dmesg_excerpt, write_json
from oomguard.engine.backend_link import BackendLink
from oomguard.engine.config import JobConfig
from oomguard.engine.dispatch import Dispatch
from oomguard.engine.fork_server import ForkServer
from oomguard.engine.handles import one_moment
from oomguard.engine.hooks import RunHooks
from oomguard.engine.intake import Intake
from oomguard.engine.ledger import Ledger
from oomguard.engine.monitor import Monitor
from oomguard.engine.outcomes import Outcomes
from oomguard.engine.pool import WorkerPool
from oomguard.engine.progress import Progress
from oomguard.engine.run_record import write_manifest
from oomguard.engine.run_summary import RunSummary
from oomguard.engine.runaways import Runaways
from oomguard.engine.sinks import Sink
from oomguard.engine.sources import Source
from oomguard.errors import SinkError
from oomguard.journal.ranges import RangeSet
from oomguard.journal.store import Journal, JournalLost
from oomguard.limits.base import GroupMemory, Limiter
from oomguard.memory.kernel_log import KernelLogTail
from oomguard.metrics.exporter import Exporter

IDLE_WAIT = 0.5  # seconds the loop waits at most when nothing is due sooner


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
        hooks: RunHooks | None = None,
        worker_setup: bytes | None = None,
    ) -> None:
        """``fork_server``: booted early by the caller (who releases it after the run),
        its error, or None for ``start_method = "spawn"`` (engine/fork_server.py).
        ``hooks``: an embedding's (engine/hooks.py); ``worker_setup``: a pickled
        ``(callable, args)`` each worker runs before it takes work (an initializer)."""
        self.config = config
        self.limiter = limiter
        self.run_dir = run_dir
        self.progress = progress
        self.memory = memory
        self.journal = journal
        done = done if done is not None else RangeSet()
        spec = {
            "function": function_spec,
            "batched": config.batched,
            "encode_json": sink.wants_json,
            # the run's own import path first: a resume from elsewhere imports the same code
            "sys_path": [*filter(None, [config.import_path]), os.getcwd(), *sys.path],
            "trim": config.trim,
            "rlimit_as": config.rlimit_as,
            "setup": worker_setup,
        }
        self.selector = selectors.DefaultSelector()
        self._build_state(source, sink, spec, done, only, fork_server)
        self._build_logic(spec)
        self.ledger.on_quarantine = hooks.quarantined if hooks is not None else None
        self.exporter: Exporter | None = None
        self.session = 0
        self.interrupted = False
        self.failure: str | None = None
        self.failure_error: BaseException | None = None

    def _build_state(
        self,
        source: Source,
        sink: Sink,
        spec: dict[str, Any],
        done: RangeSet,
        only: RangeSet | None,
        fork_server: ForkServer | OSError | None,
    ) -> None:
        """The parts that hold the run's state and resources."""
        config, memory = self.config, self.memory
        self.ledger = Ledger(self.journal, sink, self.run_dir, ordered=config.ordered, done=done)
        self.intake = Intake(config, source, self.ledger, done=done, only=only)
        self.pool = WorkerPool(config, self.limiter, spec, self.ledger, self.selector)
        self.pool.use_fork_server(fork_server)
        self.admission = Admission(AdmissionConfig.for_job(config), memory)
        self.max_in_flight = config.max_in_flight or config.workers
        self.concurrency = Aimd(ceiling=min(config.workers, self.max_in_flight))
        self.backend = BackendLink(
            config.backend,
            self.limiter,
            self.run_dir,
            self.ledger,
            concurrency=self.concurrency,
            batch_limit=self.intake.batch_limit,
        )
        self.monitor = Monitor(
            MemoryLog(self.run_dir / "memory_log.csv", config.workers),
            self.pool.views,
            self.pool.in_flight,
            config.sample_interval,
            config.workers,
        )
        self.kernel_log = KernelLogTail()  # the run's own kernel log lines, from now on

    def _build_logic(self, spec: dict[str, Any]) -> None:
        """The parts that decide, over the state's parts."""
        state = (self.pool, self.intake, self.admission, self.concurrency)
        runaways = Runaways(
            self.pool, self.intake, self.admission, self.ledger, self.monitor, self.max_in_flight
        )
        self.dispatch = Dispatch(
            self.config, self.memory, *state, runaways, self.backend, self.ledger, self.monitor
        )
        self.outcomes = Outcomes(
            self.config,
            self.memory,
            *state,
            self.dispatch,
            self.backend,
            self.ledger,
            self.monitor,
            self.kernel_log,
        )
        self.record = RunSummary(
            self.config,
            self.memory,
            spec,
            self.limiter,
            self.ledger,
            *state,
            self.backend,
            self.monitor,
        )

    def run(self) -> dict[str, Any]:
        """Run to the end; returns the summary (also written to summary.json)."""
        try:
            self.setup()
            self.dispatch.fill()
            while not self.finished():
                self.wait_and_handle()
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
        self.session = self.journal.begin_session()
        job = self.limiter.create_group("job", self.memory, oom_group=self.config.group)
        self.watch(self.intake.start(), "source")
        self.monitor.start(job)
        self.watch(self.limiter.events, "oom")
        if self.config.metrics_port is not None:
            self.exporter = Exporter(
                self.record.numbers,
                self.ledger.metrics,
                self.config.metrics_port,
                self.config.metrics_addr,
            )
        backend = self.backend.start()  # blocks until healthy: no work before it answers
        if backend is not None:
            self.watch(backend.fileno(), "backend")
        self.pool.start(job)

    def watch(self, fileobj: Any, what: str) -> None:
        """Add a descriptor to the one epoll set the loop waits on (kept across turns)."""
        self.selector.register(fileobj, selectors.EVENT_READ, (what, None))

    def finished(self) -> bool:
        return self.intake.exhausted() and self.pool.in_flight() == 0

    def wait_and_handle(self) -> None:
        ready = [key.data for key, _ in self.selector.select(self.next_timeout())]
        with one_moment():
            self._handle(ready)

    def _handle(self, ready: list[tuple[str, Any]]) -> None:
        kinds = {what for what, _ in ready}
        if "backend" in kinds:
            self.backend.handle_change()
        events = self.limiter.events
        if "oom" in kinds or events.settle_timeout() is not None:
            self.pool.note_oom_events(events.drain())
        for what, worker in ready:
            if what == "messages" and self.pool.current(worker):
                self.outcomes.read(worker)
        for what, worker in ready:
            if what == "death" and self.pool.current(worker):
                self.outcomes.died(worker)
                if not self.finished():
                    self.pool.start_slot(worker.slot)
        self.pool.kill_timed_out()
        # idle workers get their next batch before the checkpoint's fsync and the progress
        # line, not after: a worker waits on this loop between batches
        if not self.finished():
            self.dispatch.fill()
        self.ledger.maybe_checkpoint(self.config.commit_interval)
        if self.progress.due():  # a snapshot costs tens of microseconds: only when shown
            self.progress.update(self.record.snapshot())

    def next_timeout(self) -> float:
        """Until the nearest deadline: a batch's timeout, the open batch's wait, an OOM event
        announced but not counted yet, or dispatch's next look at memory."""
        timeout = IDLE_WAIT
        deadlines = (self.pool.next_deadline(), self.intake.open_deadline())
        due = [deadline for deadline in deadlines if deadline is not None]
        if due:
            timeout = min(timeout, max(0.0, min(due) - time.monotonic()))
        for wait in (self.limiter.events.settle_timeout(), self.dispatch.watch_timeout()):
            if wait is not None:
                timeout = min(timeout, wait)
        return timeout

    def teardown(self) -> dict[str, Any]:
        end_wall = time.time()
        if self.exporter is not None:
            self.exporter.close()
        self.backend.close()
        for step in (self.pool.stop_all, self.intake.close):
            try:
                step()
            except Exception:
                pass
        self.monitor.stop()
        self.selector.close()
        job_reading = self._read_job()
        if not isinstance(self.failure_error, SinkError):
            try:
                self.ledger.maybe_checkpoint(self.config.commit_interval, final=True)
            except (SinkError, JournalLost) as err:  # the run stops; the summary still says why
                self.failure = self.failure or f"{type(err).__name__}: {err}"
                self.failure_error = err
        self.ledger.close()
        write_manifest(self.journal, self.run_dir / "ingest_manifest.json")
        dmesg = write_dmesg_excerpt(
            self.run_dir / "dmesg_excerpt.txt", self.record.start_wall, end_wall, self.kernel_log
        )
        self.kernel_log.close()
        status = "interrupted" if self.interrupted else "failed" if self.failure else "finished"
        summary = self.record.summary(end_wall, job_reading, dmesg, status, self.failure)
        write_json(self.run_dir / "summary.json", summary)
        self.journal.end_session(self.session, status)
        self.progress.close(self.record.snapshot(), finished=status == "finished")
        return summary

    def _read_job(self) -> GroupMemory | None:
        job = self.pool.job
        try:
            return job.read() if job is not None else None
        except OSError:
            return None
