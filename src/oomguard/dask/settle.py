"""What an attempt on a node means for its batch, on the driver: the single-machine
engine's rules (engine/outcomes.py) over a :class:`~oomguard.dask.node.NodeResult`.

Results reported come first (committed once, by the driver's Ledger); per-item failures
go up the ladder one by one; a death splits the batch into the item to blame and the
innocent rest (engine/verdict.py ``blame``), and the blamed part takes the ladder's next
rung (engine/recovery.py), where a death on a node with nothing beside it died "alone".
"""

from __future__ import annotations

import time
from typing import Any

from oomguard.classify import Status
from oomguard.dask.node import NodeResult
from oomguard.engine.handles import Attempt
from oomguard.engine.intake import Intake
from oomguard.engine.items import Batch
from oomguard.engine.ledger import Ledger
from oomguard.engine.outcomes import settle_failures
from oomguard.engine.protocol import ItemFailure
from oomguard.engine.recovery import Policy, after_failure, retry_uncounted
from oomguard.engine.verdict import blame
from oomguard.sizes import mib


class Settle:
    def __init__(self, ledger: Ledger, intake: Intake, policy: Policy, *, batched: bool) -> None:
        self.ledger = ledger
        self.intake = intake
        self.policy = policy
        self.batched = batched

    def result(self, batch: Batch, result: NodeResult, alone: bool) -> Status:
        """Settle one attempt; returns its status (the first item failure's, if any)."""
        attempt = as_attempt(batch, result, alone)
        if result.status != Status.SUCCESS:
            return self._death(batch, result, attempt, alone)
        failure = result.batch_failure
        if failure is not None:
            status = Status(failure.status)
            self._record(attempt, result, status, error=failure.error)
            self.intake.apply(
                after_failure(batch, status, died_alone=False, policy=self.policy),
                status,
                failure.error,
            )
            return status
        self.ledger.commit(result.results)
        worst = self._failures(batch, result.item_failures)
        first = result.item_failures[0].error if result.item_failures else None
        self._record(attempt, result, worst, error=first)
        return worst

    def _death(self, batch: Batch, result: NodeResult, attempt: Attempt, alone: bool) -> Status:
        status = Status(result.status)
        evidence = {**result.evidence, "died_alone": alone}
        evidence["peak_mb"] = mib(result.peak) if result.peak is not None else None
        self._record(attempt, result, status, evidence=evidence)
        self.ledger.commit(result.results)  # what it reported before dying counts, once
        self._failures(batch, result.item_failures)
        if status is Status.OOM_KILLED:
            self.ledger.counters.oom_kills += 1
        blamed, innocent = blame(
            batch,
            batched=self.batched,
            reported=result.reported,
            running=result.running,
            items_over=result.items_over,
        )
        if innocent is not None:
            self.intake.apply(retry_uncounted(innocent), status, evidence)
        if blamed is not None:
            decision = after_failure(blamed, status, died_alone=alone, policy=self.policy)
            self.intake.apply(decision, status, evidence)
        return status

    def _failures(self, batch: Batch, failures: list[ItemFailure]) -> Status:
        return settle_failures(batch, failures, self.intake, self.policy)

    def lost(self, batch: Batch, node: str, reason: str) -> None:
        """Its node was lost with it: back to the queue, uncounted (nothing of it was
        committed: a node reports an attempt whole)."""
        evidence = {"node": node, "reason": reason}
        self.intake.apply(retry_uncounted(batch), Status.WORKER_CRASH, evidence)

    def _record(
        self,
        attempt: Attempt,
        result: NodeResult,
        status: Status,
        *,
        error: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        stats = {**result.stats, "node": result.node}
        self.ledger.record_attempt(
            attempt,
            result.worker_pid,
            status,
            error=error,
            evidence=evidence,
            stats=stats,
            peak=result.peak,
        )


def as_attempt(batch: Batch, result: NodeResult, alone: bool) -> Attempt:
    """The engine's record of one attempt, as the ledger's manifest entry reads it."""
    return Attempt(
        batch=batch,
        prediction=0,
        ticket=0,
        baseline=0,
        charged_at_start=0,
        started_at=time.monotonic() - result.seconds,
        started_wall=result.started_wall or time.time(),
        alone=alone,
    )
