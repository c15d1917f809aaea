"""Runaways and the side lane: the mechanism, under admission's rules (engine/admission.py).

A runaway is a batch grown well past its prediction and growing still: a big item, or a
poison one heading for the cap. While one runs, normal admission is closed. Two that
together pass the target go one at a time: the one holding most goes on, the others are
stopped (``preempted``, uncounted) and wait as suspects. With the side lane on, the cores
the runaways leave idle get batches held at a small ceiling (the kernel stalls them there
instead of killing them); a held batch that stalls waits there, holding what it has, and
when no runaway is left the holds are released (the stalled go on where they stopped) and
the batches set aside come first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from oomguard.engine.admission import Admission
from oomguard.engine.handles import Attempt, KillReason, WorkerHandle
from oomguard.engine.intake import Intake
from oomguard.engine.items import Batch
from oomguard.engine.ledger import Ledger
from oomguard.engine.monitor import Monitor
from oomguard.engine.pool import WorkerPool
from oomguard.errors import CgroupError

T = TypeVar("T")
Runaway = tuple[WorkerHandle, int]  # a busy worker, and the bytes it holds now
Send = Callable[[WorkerHandle, Batch, int, int], None]  # (worker, batch, prediction, held)


class Runaways:
    def __init__(
        self,
        pool: WorkerPool,
        intake: Intake,
        admission: Admission,
        ledger: Ledger,
        monitor: Monitor,
        max_in_flight: int,
    ) -> None:
        self.pool = pool
        self.intake = intake
        self.admission = admission
        self.ledger = ledger
        self.monitor = monitor
        self.max_in_flight = max_in_flight
        self.side_lane_open = False
        self.side_lane_unavailable = False  # a hold failed: no side lane for this run
        self.stalls_this_lane = 0  # held batches found stalled at their release, this opening

    def _readings(self) -> Iterator[tuple[WorkerHandle, Attempt, int]]:
        """Each busy worker not held in the side lane, its attempt and the working set it
        holds now (this loop turn's reading, ``handles.one_moment``)."""
        for handle in self.pool.busy():
            attempt = handle.attempt
            if attempt is None or handle.held:
                continue
            try:
                now = handle.charge()[1]
            except OSError:
                continue  # its group is gone: its death is being handled
            yield handle, attempt, now

    def find(self, job_usage: int | None) -> list[Runaway]:
        """Busy workers whose batch grew well past its prediction and is growing still, with
        the memory each holds now (``job_usage``: the whole job's, read just before)."""
        if job_usage is not None and job_usage <= self.admission.slack:
            return []  # none can have grown past its prediction by the slack
        admission = self.admission
        return [
            (handle, now)
            for handle, attempt, now in self._readings()
            if admission.over_prediction(now, attempt.baseline, attempt.prediction)
            and admission.still_growing(self.monitor.recent_growth(handle.slot, handle.pid))
        ]

    def relieve(self, job_usage: int | None) -> None:
        """With the job's real usage past the target, several batches that have grown by
        the runaway slack and are growing still, each within its prediction or not, would
        reach the cap before any passes its own (a burst of poison items admitted side by
        side), and the kernel would kill one of them short of the budget. The smallest of
        them are stopped until the rest are back under the target: as few as will do, since
        a big item among them may be about to finish."""
        admission = self.admission
        if job_usage is None or not admission.crowded(job_usage):
            return
        # growing now: over the last two or three samples, not a second (a batch that grew
        # and then held flat is no grower)
        window = 2.5 * self.monitor.interval
        growing = [
            (handle, now)
            for handle, attempt, now in self._readings()
            if now - attempt.baseline >= admission.slack
            and admission.still_growing(self.monitor.recent_growth(handle.slot, handle.pid, window))
        ]
        if len(growing) > 1:
            self._stop_smaller(growing, job_usage)

    def one_at_a_time(self, runaways: list[Runaway]) -> None:
        """Two runaways growing together past the target would each die short of the whole
        budget, and neither death would prove anything: the one holding most goes on, the
        others are stopped and run again, uncounted, when it is over (knowing what each
        reached)."""
        self._stop_smaller(runaways)

    def _stop_smaller(self, runaways: list[Runaway], job_usage: int | None = None) -> None:
        """Stop all but the one holding most, smallest first; with ``job_usage``, only until
        what is left is under the target. Those stopped run again as suspects, one at a time."""
        target = self.admission.config.target * self.admission.budget
        keep, stop = smaller_to_stop(runaways, job_usage, target)
        for handle in stop:
            if handle.kill(KillReason.PREEMPTED):
                self.ledger.event("runaway_preempted", worker_pid=handle.pid, kept_pid=keep.pid)

    def fill_side_lane(
        self, runaways: int, next_batch: Callable[[], Batch | None], send: Send
    ) -> None:
        """The side lane: batches held at a small ceiling on the cores runaways leave idle."""
        psi = self.monitor.last_psi
        if psi is not None and psi >= self.admission.config.psi_some_avg10:
            return  # the machine is short of memory: nothing more, not even held
        lanes = self.admission.side_lanes(os.cpu_count() or 1, runaways)
        intake = self.intake
        while True:
            side = [w for w in self.pool.busy() if w.held]
            share = self.admission.side_room(sum(w.held for w in side))
            running = sum(1 for w in side if not w.group.stalled())
            if running >= lanes or self.pool.in_flight() >= self.max_in_flight or not share:
                return
            worker = self.pool.idle_worker()
            if worker is None or not worker.group.can_hold or self.side_lane_unavailable:
                return
            batch = next_batch()
            if batch is None:
                return
            intake.held = None
            if batch.alone or batch.known_cost > share:
                intake.set_aside.append(batch)  # known to need more
                continue
            if not self.admission.likely_fits_beside(batch, share):
                intake.held = batch  # batches like it most likely need more: no side lane
                return
            if not self._hold(worker, share):
                intake.held = batch
                return
            self.ledger.counters.side_batches += 1
            send(worker, batch, share, share)

    def _hold(self, worker: WorkerHandle, share: int) -> bool:
        try:
            worker.group.hold(worker.group.usage() + share)  # a ceiling on what is charged
        except (OSError, CgroupError) as err:
            self.side_lane_unavailable = True
            self.ledger.event("side_lane", error=str(err))
            return False
        if not self.side_lane_open:
            self.side_lane_open = True
            self.ledger.event("side_lane", open=True)
        return True

    def holding(self) -> bool:
        """Whether anything waits for the runaways' end: set-aside batches or held workers."""
        return bool(self.intake.set_aside) or any(w.held for w in self.pool.workers.values())

    def release_holds(self, predicted_total: Callable[[], int]) -> bool:
        """No runaway left: held workers get their own limit back, and batches set aside for
        the runaway's end come first. A stalled batch needs more than it holds, so it goes
        on only where what it is expected to need fits beside what runs (admission's rule);
        else it waits, still held, and nothing new is admitted before it: released all at
        once, stalled big items grew into each other and were stopped, their work lost.
        Returns whether every hold is released."""
        now = time.monotonic()
        waiting = False
        for handle in self.pool.workers.values():
            if not handle.held:
                continue
            stalled = handle.group.stalled()
            attempt = handle.attempt
            if attempt is not None and stalled:
                need = self._need(handle, attempt)
                claimed = max(attempt.baseline + attempt.prediction, handle.working_set())
                others = predicted_total() - claimed
                if not self.admission.admits(others, need, self.pool.in_flight() - 1):
                    waiting = True
                    continue
            self._release(handle, now, stalled)
        self.intake.release_set_aside()
        if not waiting and self.side_lane_open:
            self.side_lane_open = False
            self.ledger.event("side_lane", open=False, stalled=self.stalls_this_lane)
            self.stalls_this_lane = 0
        return not waiting

    def _need(self, handle: WorkerHandle, attempt: Attempt) -> int:
        """What a held batch is expected to need once released."""
        return max(
            handle.held, self.admission.predict_batch(attempt.batch), attempt.batch.known_cost
        )

    def _release(self, handle: WorkerHandle, now: float, stalled: bool) -> None:
        try:
            handle.group.release()
        except OSError:
            pass  # its cgroup is gone with it: its death is being handled
        attempt = handle.attempt
        if attempt is not None:
            if attempt.deadline is not None:
                attempt.deadline += now - handle.held_since  # a stall is not its time
            attempt.prediction = self._need(handle, attempt)
        handle.held = 0
        if stalled:
            self.ledger.counters.side_stalls += 1
            self.stalls_this_lane += 1


def smaller_to_stop(
    readings: list[tuple[T, int]], job_usage: int | None, target: float
) -> tuple[T, list[T]]:
    """Of batches growing into each other (each with the bytes it holds), the one that goes
    on and those to stop, smallest first: all the others, or with ``job_usage`` only as many
    as bring it under ``target``. Of equals (batches that started together grow alike) the
    last goes on."""
    *smaller, (keep, _) = sorted(readings, key=lambda reading: reading[1])
    stop = []
    for handle, now in smaller:
        if job_usage is not None:
            if job_usage < target:
                break
            job_usage -= now
        stop.append(handle)
    return keep, stop
