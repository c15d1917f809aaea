"""Dispatch: which batch goes to which idle worker, now — or why nothing goes.

Each loop turn reads the job's memory once, and each worker's (``handles.one_moment``: the
intake pause, the runaways, admission and the loop's next timeout all judge that one
moment), then, in order:

1. a backend that is restarting pauses everything;
2. runaways: two crowding each other go one at a time, and so do batches that grow
   together past the target before any has passed its prediction; while a runaway runs,
   only the side lane gets work (``engine/runaways.py``);
3. with no runaway left, holds are released;
4. a paused intake, or a batch running alone, sends nothing;
5. the "alone" rung waits for the pool to drain, then has the whole budget;
6. otherwise batches go while the in-flight limit (AIMD) and admission
   (``engine/admission.py``: predicted memory against the target) allow; a batch that
   does not fit is held until memory frees.
"""

from __future__ import annotations

import time

from oomguard.engine.admission import Admission
from oomguard.engine.aimd import Aimd
from oomguard.engine.backend_link import BackendLink
from oomguard.engine.batch_size import room_to_grow
from oomguard.engine.config import JobConfig
from oomguard.engine.handles import Attempt, WorkerHandle
from oomguard.engine.intake import Intake
from oomguard.engine.items import Batch
from oomguard.engine.ledger import Ledger
from oomguard.engine.monitor import Monitor
from oomguard.engine.pool import WorkerPool
from oomguard.engine.protocol import batch_message
from oomguard.engine.runaways import Runaways
from oomguard.sizes import mib


class Dispatch:
    def __init__(
        self,
        config: JobConfig,
        memory: int,
        pool: WorkerPool,
        intake: Intake,
        admission: Admission,
        concurrency: Aimd,
        runaways: Runaways,
        backend: BackendLink,
        ledger: Ledger,
        monitor: Monitor,
    ) -> None:
        self.config = config
        self.memory = memory
        self.pool = pool
        self.intake = intake
        self.admission = admission
        self.concurrency = concurrency
        self.runaways = runaways
        self.backend = backend
        self.ledger = ledger
        self.monitor = monitor
        self.usage: int | None = None  # the job's memory, as this turn's dispatch read it

    def job_usage(self) -> int | None:
        """The job's working set now (what it holds less the page cache the kernel may
        drop), read fresh: the monitor's last sample may be 0.2 s old; None where it
        cannot be read."""
        job = self.pool.job
        try:
            return job.working_set() if job is not None else None
        except OSError:
            return None

    def watch_timeout(self) -> float | None:
        """How long the loop may sleep for dispatch's sake (None: as long as it likes)."""
        if self.config.admission and (self.admission.paused or self.pool.in_flight() > 0):
            return self.admission.watch_timeout(self.usage)
        return None

    def predicted_total(self) -> int:
        """Idle workers' working sets now, plus what each busy worker is expected to hold:
        its baseline and predicted cost, or what it holds now when it has already grown past
        that (a batch bigger than predicted claims what it took, so the rest is not promised
        twice)."""
        total = 0
        for handle in self.pool.workers.values():
            now = handle.working_set()
            attempt = handle.attempt
            if attempt is not None:
                total += max(attempt.baseline + attempt.prediction, now)
            else:
                total += now
        return total

    def plentiful(self, batch: Batch) -> bool:
        """Twice ``batch`` would still use under half of the target: room to grow batches."""
        doubled = self.admission.predict_batch(batch, times=2)
        target = self.admission.config.target
        return room_to_grow(self.predicted_total() + doubled, target, self.memory)

    def fill(self) -> None:
        """Give idle workers work, as far as memory and the limits allow."""
        usage = self.usage = self.job_usage()
        if not self.backend.ready:
            return  # paused: the backend is restarting
        self._check_pause(usage)
        runaways = self.runaways.find(usage)
        if len(runaways) > 1 and self.admission.crowded(self.predicted_total()):
            self.runaways.one_at_a_time(runaways)
        else:
            self.runaways.relieve(usage)
        if runaways:
            self.runaways.fill_side_lane(len(runaways), self._next_batch, self.send)
            return
        if self.runaways.holding() and not self.runaways.release_holds(self.predicted_total):
            return  # a stalled side batch waits for room, before anything new
        if self.admission.paused and self.pool.in_flight() > 0:
            return  # with nothing in flight one batch goes anyway: a pause never stalls
        if any(w.attempt.alone for w in self.pool.busy() if w.attempt is not None):
            return  # a batch running alone has the whole budget until it ends
        self._fill_admitted()

    def _fill_admitted(self) -> None:
        intake = self.intake
        while True:
            worker = self.pool.idle_worker()
            if worker is None:
                return
            in_flight = self.pool.in_flight()
            if intake.alone:
                # the whole budget for one batch: wait until nothing else runs
                if in_flight == 0:
                    self.ledger.counters.alone_runs += 1
                    self.send(worker, intake.alone.popleft(), self.admission.predict(1, 0))
                return
            if in_flight >= self.concurrency.limit:
                return
            batch = self._next_batch()
            if batch is None:
                return
            warm = batch.kind in worker.warm_for
            prediction = max(self.admission.predict_batch(batch, warm=warm), batch.known_cost)
            if not self.admission.admits(self.predicted_total(), prediction, in_flight):
                intake.held = batch  # it waits for memory, not for a worker
                return
            intake.held = None
            self.send(worker, batch, prediction)

    def _next_batch(self) -> Batch | None:
        suspect = any(w.attempt.batch.suspect for w in self.pool.busy() if w.attempt is not None)
        return self.intake.next_batch(suspect_in_flight=suspect, fitting=self._fitting)

    def _fitting(self, size: int) -> int:
        """``size`` (the sizer's), cut to the items whose predicted peak fits the room left."""
        sizer = self.intake.sizer
        if not sizer.enabled or self.admission.config.sequential:
            return size  # one item at a time: a longer batch needs no more memory
        room = int(self.admission.config.target * self.memory) - self.predicted_total()
        return sizer.fitting(self.admission.costs.per_item(), max(0, room))

    def _check_pause(self, job_usage: int | None) -> None:
        """Pause or resume intake on ``job_usage``, read fresh: a killed worker's memory goes
        within milliseconds, and a runaway's comes as fast."""
        if not self.config.admission:
            return
        monitor = self.monitor
        usage = job_usage if job_usage is not None else monitor.last_working_set
        change = self.admission.update_pause(usage, monitor.last_psi)
        if change is not None:
            self.ledger.event(
                change,
                working_set_mb=mib(usage),
                psi_some_avg10=monitor.last_psi,
                reason=self.admission.pause_reason or None,
            )

    def send(self, worker: WorkerHandle, batch: Batch, prediction: int = 0, held: int = 0) -> None:
        """Start ``batch`` on ``worker``; ``held``: the worker is held (the side lane) at its
        memory now plus this many bytes."""
        batch.attempt += 1
        now = time.monotonic()
        try:
            worker.group.reset_peak()
            charged, working = worker.charge()  # idle since its last batch: this turn's reading
        except OSError:
            charged = working = 0
        timeout = self.config.timeout
        worker.begin(
            Attempt(
                batch=batch,
                prediction=prediction,
                ticket=self.concurrency.ticket(),
                baseline=working,
                charged_at_start=charged,
                started_at=now,
                started_wall=time.time(),
                alone=batch.alone,
                side=bool(held),
                deadline=now + timeout if timeout is not None else None,
            )
        )
        if held:
            worker.held, worker.held_since = held, now
        message = batch_message(
            batch.batch_id,
            batch.wire_items(),
            self.backend.pressure_level(),
            batch.attempt,
        )
        try:
            worker.conn.send(message)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it is dying: its pidfd will tell, and the batch is retried uncounted
