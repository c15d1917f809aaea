"""What a worker's death says: the verdict rules, the one home of that judgement.

Pure functions over plain facts (no processes, no files), beside the recovery ladder
(:mod:`oomguard.engine.recovery`) that acts on them. The supervisor gathers the facts of a
death (exit code, the reason it killed the worker itself, OOM counters, peaks, the
workers' recent growth) and asks here:

- **status**: killed for a group restart (``worker_crash``, uncounted), preempted,
  timed out, OOM-killed (an OOM event, a counter, or the watchdog naming it), or any
  other death (``worker_crash``);
- **died alone**: its peak reached ``alone_fraction`` of the room it could ever have had
  (the budget less the other workers' baselines): the item is bigger than the budget, so
  there is no point running it alone again;
- **bystander**: an OOM-killed worker that was held beside a runaway, or that was not
  the one growing when the kernel struck (another in-flight batch grew by more than
  :data:`BYSTANDER_MARGIN` beyond it over the last second): retried, not counted;
- **at its own cap**: it reached :data:`OWN_CAP_SHARE` of a ``worker_memory`` cap of its
  own, with the job's room to spare: too big for the worker, not a sign of too many at once;
- **blame**: which of the batch's unreported items to blame (a per-item function's
  running item; a batched function's whole batch) and which are innocent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from oomguard.classify import Status
from oomguard.engine.handles import KillReason
from oomguard.engine.items import Batch
from oomguard.engine.recovery import pin_item, single_item_batch

MiB = 1024 * 1024
BYSTANDER_MARGIN = 16 * MiB  # grew this much more than the victim: the other was growing
OWN_CAP_SHARE = 0.95  # of a worker_memory cap: the worker died at its own cap


def death_status(kill_reason: KillReason | None, oom_seen: bool) -> Status:
    """How a worker's death is classified; ``oom_seen``: an OOM event for its group, a
    rise of its group's OOM kill counter, or the watchdog naming its pid."""
    if kill_reason is KillReason.GROUP:
        return Status.WORKER_CRASH  # requeued uncounted: the group's victim is elsewhere
    if kill_reason is KillReason.PREEMPTED:
        return Status.PREEMPTED
    if kill_reason is KillReason.TIMEOUT:
        return Status.TIMEOUT
    return Status.OOM_KILLED if oom_seen else Status.WORKER_CRASH


def room_for(budget: int, others_baselines: Iterable[int]) -> int:
    """The budget less the other workers' baselines: what the victim could ever have had.

    Baselines only (a busy worker's memory when its batch started, an idle one's now):
    a worker that died next to another big batch did not have the budget to itself, and
    is retried alone rather than quarantined. One that died holding nearly all of this
    had it in effect: its item is bigger than the budget, and it is quarantined at its
    first death without draining the pool.
    """
    return max(1, budget - sum(others_baselines))


def died_alone(peak: int | None, room: int, alone_fraction: float) -> bool:
    return peak is not None and peak >= alone_fraction * room


def is_bystander(victim_growth: int | None, others_growth: Iterable[int | None]) -> bool:
    """Was another in-flight batch the one growing when the victim was killed? Growths:
    bytes grown over the last second (None: too young to say)."""
    if victim_growth is None:
        return False
    floor = max(victim_growth, 0) + BYSTANDER_MARGIN
    return any(growth is not None and growth > floor for growth in others_growth)


def at_own_cap(peak: int | None, own_cap: int | None) -> bool:
    return own_cap is not None and peak is not None and peak >= OWN_CAP_SHARE * own_cap


@dataclass(frozen=True)
class Verdict:
    status: Status
    peak: int | None
    died_alone: bool
    bystander: bool
    at_own_cap: bool

    @property
    def too_many_at_once(self) -> bool:
        """An OOM kill that came from too much running at once (not one item too big for
        any budget, nor a worker at its own cap, nor a bystander): fewer in flight."""
        return (
            self.status is Status.OOM_KILLED
            and not self.bystander
            and not self.died_alone
            and not self.at_own_cap
        )


def judge(
    status: Status,
    *,
    peak: int | None,
    room: int,
    alone_fraction: float,
    held: bool,
    ran_alone: bool,
    own_cap: int | None,
    victim_growth: int | None,
    others_growth: Iterable[int | None],
) -> Verdict:
    """The verdict on the death of a worker that was running a batch. ``held``: it ran in
    the side lane beside a runaway (its death says nothing of it); ``ran_alone``: the batch
    was on the "alone" rung."""
    alone = died_alone(peak, room, alone_fraction)
    bystander = status is Status.OOM_KILLED and (
        held or (not alone and not ran_alone and is_bystander(victim_growth, others_growth))
    )
    return Verdict(status, peak, alone, bystander, at_own_cap(peak, own_cap))


def blame(
    batch: Batch,
    *,
    batched: bool,
    reported: set[int],
    running: int | None,
    items_over: bool,
) -> tuple[Batch | None, Batch | None]:
    """A dead worker's batch as (the part to blame, the innocent rest), unreported items
    only (what was reported is settled). A batched function's whole batch is to blame; a
    per-item one's running item (``running``, named by the shared slot), or, when every
    item had finished (``items_over``: the death came while reporting), the unreported rest
    with its history."""
    if batched:
        return batch, None
    if items_over:
        unreported = [item for item in batch.items if item.index not in reported]
        if not unreported:
            return None, None
        return batch.only(unreported, memory_deaths=batch.memory_deaths, alone=batch.alone), None
    pinned, others = pin_item(batch, reported, running)
    blamed = single_item_batch(batch, pinned) if pinned is not None else None
    return blamed, batch.only(others) if others else None
