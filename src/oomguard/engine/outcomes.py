"""Outcomes: what happens when a batch comes back, or its worker dies.

A finished batch: its results go to the ledger, each failed item and a failed batch to
the recovery ladder (``engine/recovery.py``), errors that are the backend's back to the
queue uncounted; a clean batch teaches admission its cost and may grow the batch size.

A death: the facts (exit code, why the supervisor killed it, OOM counters, peaks, the
workers' growth) go to the verdict rules (``engine/verdict.py``); the verdict and the
ladder decide what runs again, alone, halved, or is quarantined; an OOM kill that came
from too much at once cuts the in-flight limit (AIMD); with ``group=True`` the other
workers are restarted with it.
"""

from __future__ import annotations

from typing import Any

from oomguard.classify import Status
from oomguard.engine.admission import Admission
from oomguard.engine.aimd import Aimd
from oomguard.engine.backend_link import BackendLink
from oomguard.engine.config import JobConfig
from oomguard.engine.dispatch import Dispatch
from oomguard.engine.group_kill import kernel_victim
from oomguard.engine.handles import Attempt, KillReason, WorkerHandle, WorkerState
from oomguard.engine.intake import Intake
from oomguard.engine.items import Batch
from oomguard.engine.ledger import Ledger
from oomguard.engine.monitor import Monitor
from oomguard.engine.pool import WorkerPool
from oomguard.engine.protocol import TRIMMED, ItemFailure
from oomguard.engine.recovery import Policy, after_failure, retry_uncounted, single_item_batch
from oomguard.engine.verdict import Verdict, blame, death_status, judge, room_for
from oomguard.memory.kernel_log import KernelLogTail, kill_report
from oomguard.sizes import mib

KERNEL_LINES = 400  # of the run's latest kernel log lines, searched for a victim's kill


def settle_failures(
    batch: Batch, failures: list[ItemFailure], intake: Intake, policy: Policy
) -> Status:
    """Each failed item of ``batch`` up the ladder as a batch of its own; returns the
    first failure's status (SUCCESS for none). The engine's and a cluster driver's."""
    worst = Status.SUCCESS
    for index, failure, error in failures:
        item = next(i for i in batch.items if i.index == index)
        status = Status(failure)
        worst = status if worst is Status.SUCCESS else worst
        single = single_item_batch(batch, item)
        decision = after_failure(single, status, died_alone=False, policy=policy)
        intake.apply(decision, status, error)
    return worst


class Outcomes:
    def __init__(
        self,
        config: JobConfig,
        memory: int,
        pool: WorkerPool,
        intake: Intake,
        admission: Admission,
        concurrency: Aimd,
        dispatch: Dispatch,
        backend: BackendLink,
        ledger: Ledger,
        monitor: Monitor,
        kernel_log: KernelLogTail,
    ) -> None:
        self.config = config
        self.memory = memory
        self.pool = pool
        self.intake = intake
        self.admission = admission
        self.concurrency = concurrency
        self.dispatch = dispatch
        self.backend = backend
        self.ledger = ledger
        self.monitor = monitor
        self.kernel_log = kernel_log
        self.policy = Policy(config.crash_retries, config.error_retries)

    def read(self, handle: WorkerHandle) -> None:
        """What ``handle`` said; each batch it finished is settled as its message comes."""
        for stats in self.pool.read(handle):
            self.finished(handle, stats)

    # ---------------------------------------------------------------- a batch came back

    def finished(self, handle: WorkerHandle, stats: dict[str, Any]) -> None:
        """A batch came back (the worker lives): write results, route failed items."""
        attempt = handle.attempt
        assert attempt is not None
        batch = attempt.batch
        peak = handle.peak()
        held = attempt.side
        failure = attempt.batch_failure
        if failure is not None:
            status = Status(failure.status)
            if self.backend.is_failure(failure.error):
                status = Status.BACKEND_FAILURE
            self.ledger.record_attempt(
                attempt, handle.pid, status, held=held, error=failure.error, peak=peak
            )
            handle.end()
            if status is Status.BACKEND_FAILURE:
                self._backend_failed(batch, failure.error)
            else:
                decision = after_failure(batch, status, died_alone=False, policy=self.policy)
                self.intake.apply(decision, status, failure.error)
            return
        self.ledger.commit(attempt.results)
        worst = self._settle_item_failures(attempt)
        first_error = attempt.item_failures[0].error if attempt.item_failures else None
        measured = self._cost(handle, attempt, peak) if worst is Status.SUCCESS else None
        cost = measured[0] if measured is not None else None
        self.ledger.record_attempt(
            attempt,
            handle.pid,
            worst,
            held=held,
            error=first_error,
            stats=stats,
            peak=peak,
            cost=cost,
        )
        handle.batches_done += 1
        if worst is Status.SUCCESS:
            if measured is not None:
                kind = batch.kind
                first = kind not in handle.warm_for
                self.admission.learn(batch, *measured, first=first)
                handle.warm_for.add(kind)
            self.intake.learn_batch_time(
                len(batch.items), attempt.elapsed, lambda: self.dispatch.plentiful(batch)
            )
            self.concurrency.success()
            self.backend.success()
        self.ledger.counters.malloc_trims += bool(stats.get(TRIMMED))
        handle.end()
        self.pool.maybe_recycle(handle, stats)

    @staticmethod
    def _cost(handle: WorkerHandle, attempt: Attempt, peak: int | None) -> tuple[int, int] | None:
        """What the batch needed (its page cache left out), and what it left held at its
        end over its start (the worker's working set then and now); None where unknown."""
        if peak is None:
            return None
        try:
            charged, working = handle.charge()
        except OSError:
            return None
        return attempt.cost(peak, charged, working), max(0, working - attempt.baseline)

    def _settle_item_failures(self, attempt: Attempt) -> Status:
        """Per-item failures of a batch that went on: the backend's back to the queue,
        uncounted; each other one up the ladder alone. Returns the worst status."""
        backend_lost = [f for f in attempt.item_failures if self.backend.is_failure(f.error)]
        if not backend_lost:
            return self._settle_failures(attempt.batch, attempt.item_failures)
        lost = {failure.input_index for failure in backend_lost}
        batch = attempt.batch
        retry = batch.only([item for item in batch.items if item.index in lost])
        self.intake.apply(retry_uncounted(retry), Status.BACKEND_FAILURE, backend_lost[0].error)
        self.backend.failed(len(lost), backend_lost[0].error)
        self._settle_failures(
            batch, [f for f in attempt.item_failures if f.input_index not in lost]
        )
        return Status.BACKEND_FAILURE

    def _settle_failures(self, batch: Batch, failures: list[ItemFailure]) -> Status:
        return settle_failures(batch, failures, self.intake, self.policy)

    def _backend_failed(self, batch: Batch, error: dict[str, Any]) -> None:
        """The whole batch failed because the backend did: requeued, uncounted."""
        self.intake.apply(retry_uncounted(batch), Status.BACKEND_FAILURE, error)
        self.backend.failed(len(batch.items), error)

    # ---------------------------------------------------------------- a worker died

    def died(self, handle: WorkerHandle) -> None:
        """The pidfd says the worker is gone: classify, recover its batch, release it (the
        caller starts its slot again)."""
        self.read(handle)  # what it said before dying still counts
        handle.proc.wait()
        oom_seen, kills = self.pool.oom_seen(handle)
        status = death_status(handle.kill_reason, oom_seen)
        if status is Status.OOM_KILLED and self.config.group and not handle.group_restarted:
            victim = kernel_victim(handle, self.pool.workers.values())  # v2: the kernel took all
            if victim is not handle:
                self.pool.restart_group(victim)  # this one was a member, killed with it
                status = death_status(handle.kill_reason, oom_seen)
        evidence = self._evidence(handle, status, kills)
        attempt = handle.attempt
        if attempt is not None:
            self._recover(handle, attempt, status, evidence)
        elif status is Status.OOM_KILLED:
            self.ledger.counters.oom_kills += 1
        if handle.state is WorkerState.STARTING:
            self.ledger.event("worker_failed_to_start", status=str(status), **evidence)
            self.pool.note_start_failure(handle)  # too many in a row stop the run
        self.pool.remove(handle)

    def _evidence(self, handle: WorkerHandle, status: Status, kills: int) -> dict[str, Any]:
        code = handle.proc.returncode
        evidence: dict[str, Any] = {"worker_pid": handle.pid, "returncode": code}
        if code is not None and code < 0:
            evidence["signal"] = -code
        if handle.kill_reason is KillReason.GROUP:
            evidence["group_restart"] = True
        elif status is Status.TIMEOUT:
            evidence["timeout_sec"] = self.config.timeout
        elif status is Status.OOM_KILLED:
            evidence["enforcer"] = self.pool.limiter.kind
            evidence["oom_kill_count"] = max(kills, 1)
            evidence["job_cap_mb"] = mib(self.memory)
            kernel = kill_report(self.kernel_log.read(), handle.pid, KERNEL_LINES)
            if kernel:
                evidence["kernel_log"] = kernel
        return evidence

    def _verdict(self, handle: WorkerHandle, attempt: Attempt, status: Status) -> Verdict:
        others = [w for w in self.pool.workers.values() if w is not handle]
        baselines = (
            w.attempt.baseline if w.attempt is not None else w.working_set() for w in others
        )
        growth = self.monitor.recent_growth
        return judge(
            status,
            peak=handle.peak(),
            room=room_for(self.memory, baselines),
            alone_fraction=self.config.alone_fraction,
            held=bool(handle.held),
            ran_alone=attempt.batch.alone,
            own_cap=handle.group.limit,  # worker_memory: a cap of its own inside the job's
            victim_growth=growth(handle.slot, handle.pid),
            others_growth=(growth(w.slot, w.pid) for w in others if w.attempt is not None),
        )

    def _recover(
        self, handle: WorkerHandle, attempt: Attempt, status: Status, evidence: dict[str, Any]
    ) -> None:
        """The death of a worker that was running a batch."""
        verdict = self._verdict(handle, attempt, status)
        batch = attempt.batch
        peak = verdict.peak
        evidence["peak_mb"] = mib(peak) if peak is not None else None
        evidence["died_alone"] = verdict.died_alone
        if handle.group.limit is not None:
            evidence["at_worker_cap"] = verdict.at_own_cap
        self.ledger.record_attempt(
            attempt,
            handle.pid,
            status,
            held=attempt.side,
            evidence=evidence,
            bystander=verdict.bystander,
            peak=peak,
            running=handle.running_item(),
        )
        self.ledger.commit(attempt.results)
        if status is Status.OOM_KILLED:
            self.ledger.counters.oom_kills += 1
            if peak is not None:  # its retry is admitted only where this much fits
                batch.known_cost = max(batch.known_cost, attempt.reached(peak))
            if verdict.too_many_at_once:
                limit = self.concurrency.decrease(attempt.ticket)
                if limit is not None:
                    self.ledger.event("concurrency", in_flight_limit=limit)
        self._settle_reported(attempt)
        reason = handle.kill_reason
        if reason is KillReason.PREEMPTED:
            self._requeue_preempted(handle, attempt, peak)
        elif reason is KillReason.GROUP or verdict.bystander:
            # killed with its group, or while another batch was the one growing: uncounted
            self.ledger.counters.bystanders += verdict.bystander
            self._requeue_unreported(attempt, status, evidence)
        else:
            self._blame(handle, attempt, status, evidence, verdict.died_alone)
        if (
            status is Status.OOM_KILLED
            and self.config.group
            and reason is not KillReason.GROUP
            and not handle.group_restarted
        ):
            self.pool.restart_group(handle)

    def _settle_reported(self, attempt: Attempt) -> None:
        """Per-item failures the worker reported before it died, settled one by one."""
        self._settle_failures(attempt.batch, attempt.item_failures)
        attempt.item_failures = []

    def _blame(
        self,
        handle: WorkerHandle,
        attempt: Attempt,
        status: Status,
        evidence: dict[str, Any],
        died_alone: bool,
    ) -> None:
        blamed, innocent = self._split(handle, attempt)
        if innocent is not None:
            self.intake.apply(retry_uncounted(innocent), status, evidence)
        if blamed is not None:
            decision = after_failure(blamed, status, died_alone=died_alone, policy=self.policy)
            self.intake.apply(decision, status, evidence)

    def _split(self, handle: WorkerHandle, attempt: Attempt) -> tuple[Batch | None, Batch | None]:
        return blame(
            attempt.batch,
            batched=self.config.batched,
            reported=attempt.reported,
            running=handle.running_item(),
            items_over=handle.items_over(),
        )

    def _requeue_unreported(
        self, attempt: Attempt, status: Status, evidence: dict[str, Any]
    ) -> None:
        """What the worker had not reported goes back to the queue, its history unchanged
        (what it reported is in the sink already: running it again would duplicate it)."""
        remaining = attempt.unreported()
        if remaining:
            batch = attempt.batch
            retry = batch if len(remaining) == len(batch.items) else batch.only(remaining)
            self.intake.apply(retry_uncounted(retry), status, evidence)

    def _requeue_preempted(self, handle: WorkerHandle, attempt: Attempt, peak: int | None) -> None:
        """A stopped batch (the smaller of runaways growing together; a held side batch is
        never stopped) goes back to the queue uncounted; the part to blame is known to need
        more than it reached, so it waits, a suspect, for the runaway to end."""
        batch = attempt.batch
        needed = max(batch.known_cost, attempt.reached(peak))
        evidence = {"worker_pid": handle.pid}
        blamed, innocent = self._split(handle, attempt)
        if innocent is not None:
            self.intake.apply(retry_uncounted(innocent), Status.PREEMPTED, evidence)
        if blamed is None:
            return
        blamed.known_cost = max(blamed.known_cost, needed)
        self.intake.suspect(blamed)  # a runaway stopped for a bigger one
