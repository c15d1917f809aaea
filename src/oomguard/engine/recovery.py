"""The recovery ladder: what happens to a batch after a failed attempt. The only home of
this policy; pure functions over :class:`Batch` history, so every rung is unit-testable.

Memory deaths (``oom_killed``, ``memory_error``):
    1st death                    -> retried as it is (as a suspect: never beside another,
                                    engine/intake.py)
    2nd death                    -> retried alone: the other workers drain and wait
    death alone (or at >= 90% of the whole budget, which is "alone" already)
                                 -> split in halves (bisection), down to single items
    a single item dying alone    -> quarantined with its evidence, never retried
``timeout`` / ``worker_crash``:   retried up to ``crash_retries`` times, then bisected
``error`` (an exception in user code): retried ``error_retries`` times (default 0), then
    bisected; a single item is quarantined with its traceback.
A bystander (killed while another batch was the one growing) is retried, uncounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oomguard.classify import MEMORY_STATUSES, Status
from oomguard.engine.items import Batch, Item


@dataclass(frozen=True)
class Policy:
    crash_retries: int = 2
    error_retries: int = 0


@dataclass
class Decision:
    retry: list[Batch] = field(default_factory=list)  # to the front of the queue
    alone: list[Batch] = field(default_factory=list)  # to run with the pool drained
    quarantine: list[Item] = field(default_factory=list)
    action: str = ""  # what was decided, for the manifest: retry | alone | bisect | quarantine


def _split_or_quarantine(batch: Batch, decision: Decision) -> Decision:
    if len(batch.items) == 1:
        decision.quarantine.append(batch.items[0])
        decision.action = "quarantine"
    else:
        decision.retry.extend(batch.split())
        decision.action = "bisect"
    return decision


def after_failure(batch: Batch, status: Status, *, died_alone: bool, policy: Policy) -> Decision:
    """The next step for ``batch`` after an attempt that ended in ``status``."""
    decision = Decision()
    if status in MEMORY_STATUSES:
        batch.memory_deaths += 1
        if batch.alone or died_alone:
            return _split_or_quarantine(batch, decision)
        if batch.memory_deaths >= 2:
            batch.alone = True
            decision.alone.append(batch)
            decision.action = "alone"
            return decision
        decision.retry.append(batch)
        decision.action = "retry"
        return decision
    if status in (Status.TIMEOUT, Status.WORKER_CRASH):
        batch.crash_deaths += 1
        if batch.crash_deaths <= policy.crash_retries:
            decision.retry.append(batch)
            decision.action = "retry"
            return decision
        return _split_or_quarantine(batch, decision)
    if status is Status.ERROR:
        if batch.error_retries < policy.error_retries:
            batch.error_retries += 1
            decision.retry.append(batch)
            decision.action = "retry"
            return decision
        return _split_or_quarantine(batch, decision)
    raise ValueError(f"no recovery for status {status}")


def retry_uncounted(batch: Batch) -> Decision:
    """A bystander, or work that never started: back in the queue, its history unchanged."""
    return Decision(retry=[batch], action="retry_bystander")


def pin_item(
    batch: Batch, reported: set[int], running: int | None = None
) -> tuple[Item | None, list[Item]]:
    """For a per-item function: the item to blame for a death, and the unreported others.

    ``running`` is the index the worker marked as running; without it (the worker died
    before marking one) the first unreported item is blamed. The others (finished but not
    yet reported, or never started) go back to the queue uncounted.
    """
    remaining = [item for item in batch.items if item.index not in reported]
    if not remaining:
        return None, []
    pinned = next((item for item in remaining if item.index == running), remaining[0])
    return pinned, [item for item in remaining if item is not pinned]


def single_item_batch(batch: Batch, item: Item) -> Batch:
    """The pinned item as a batch of its own, keeping the history if it was already alone."""
    if len(batch.items) == 1:
        return batch
    return batch.only([item], known_cost=batch.known_cost)
