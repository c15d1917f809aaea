"""The verdict rules on a worker's death, as pure functions: no process, no cgroup."""

from __future__ import annotations

from typing import Any

import pytest

from oomguard.classify import Status
from oomguard.engine.handles import KillReason
from oomguard.engine.items import Batch, Item
from oomguard.engine.verdict import (
    BYSTANDER_MARGIN,
    Verdict,
    at_own_cap,
    blame,
    death_status,
    died_alone,
    is_bystander,
    judge,
    room_for,
)

MiB = 1024 * 1024


def batch_of(*indices: int) -> Batch:
    return Batch([Item(i, {"i": i}, 10) for i in indices])


@pytest.mark.parametrize(
    ("reason", "oom_seen", "expected"),
    [
        (None, False, Status.WORKER_CRASH),
        (None, True, Status.OOM_KILLED),
        (KillReason.TIMEOUT, False, Status.TIMEOUT),
        (KillReason.TIMEOUT, True, Status.TIMEOUT),  # we killed it: the kill is ours
        (KillReason.PREEMPTED, True, Status.PREEMPTED),
        (KillReason.GROUP, True, Status.WORKER_CRASH),  # the group's victim is elsewhere
        (KillReason.GROUP, False, Status.WORKER_CRASH),
    ],
)
def test_death_status(reason: KillReason | None, oom_seen: bool, expected: Status) -> None:
    assert death_status(reason, oom_seen) is expected


def test_room_is_the_budget_less_the_others_baselines_never_below_one_byte() -> None:
    assert room_for(1000 * MiB, [100 * MiB, 50 * MiB]) == 850 * MiB
    assert room_for(1000 * MiB, []) == 1000 * MiB
    assert room_for(100, [300]) == 1


def test_died_alone_at_the_alone_fraction_of_its_room() -> None:
    assert died_alone(900 * MiB, 1000 * MiB, 0.90)
    assert not died_alone(899 * MiB, 1000 * MiB, 0.90)
    assert not died_alone(None, 1000 * MiB, 0.90)  # no peak: nothing proves it


def test_a_bystander_is_one_another_batch_outgrew_by_the_margin() -> None:
    assert is_bystander(10 * MiB, [10 * MiB + BYSTANDER_MARGIN + 1])
    assert not is_bystander(10 * MiB, [10 * MiB + BYSTANDER_MARGIN])
    assert not is_bystander(10 * MiB, [None, 5 * MiB])
    # a victim that shrank counts as not growing at all
    assert is_bystander(-50 * MiB, [BYSTANDER_MARGIN + 1])
    assert not is_bystander(None, [500 * MiB])  # too young to say: not a bystander


def test_at_its_own_cap() -> None:
    assert at_own_cap(95 * MiB, 100 * MiB)
    assert not at_own_cap(94 * MiB, 100 * MiB)
    assert not at_own_cap(95 * MiB, None)
    assert not at_own_cap(None, 100 * MiB)


def verdict(status: Status = Status.OOM_KILLED, **facts: Any) -> Verdict:
    values: dict[str, Any] = {
        "peak": 300 * MiB,
        "room": 1000 * MiB,
        "alone_fraction": 0.90,
        "held": False,
        "ran_alone": False,
        "own_cap": None,
        "victim_growth": 5 * MiB,
        "others_growth": [400 * MiB],
    }
    values.update(facts)
    return judge(status, **values)


def test_judge_an_oom_kill_beside_a_growing_batch_is_a_bystander() -> None:
    found = verdict()
    assert found.bystander and not found.died_alone
    assert not found.too_many_at_once


def test_judge_a_held_batch_is_always_a_bystander_of_the_runaway() -> None:
    found = verdict(others_growth=[], victim_growth=None, held=True)
    assert found.bystander


def test_judge_died_alone_or_ran_alone_is_never_a_bystander() -> None:
    assert not verdict(peak=950 * MiB).bystander
    assert verdict(peak=950 * MiB).died_alone
    assert not verdict(ran_alone=True).bystander


def test_judge_too_many_at_once_cuts_concurrency_only_for_an_oom_of_its_own() -> None:
    crowded = verdict(others_growth=[1 * MiB])
    assert crowded.too_many_at_once
    at_cap = verdict(others_growth=[1 * MiB], own_cap=310 * MiB)
    assert at_cap.at_own_cap and not at_cap.too_many_at_once
    crash = verdict(Status.WORKER_CRASH, others_growth=[400 * MiB])
    assert not crash.bystander and not crash.too_many_at_once


def test_blame_a_batched_function_blames_the_whole_batch() -> None:
    batch = batch_of(0, 1, 2)
    assert blame(batch, batched=True, reported={0}, running=1, items_over=False) == (batch, None)


def test_blame_a_per_item_function_pins_the_running_item() -> None:
    batch = batch_of(0, 1, 2, 3)
    blamed, innocent = blame(batch, batched=False, reported={0}, running=2, items_over=False)
    assert blamed is not None and blamed.indices == [2]
    assert innocent is not None and innocent.indices == [1, 3]


def test_blame_without_a_running_item_pins_the_first_unreported() -> None:
    batch = batch_of(0, 1, 2)
    blamed, innocent = blame(batch, batched=False, reported=set(), running=None, items_over=False)
    assert blamed is not None and blamed.indices == [0]
    assert innocent is not None and innocent.indices == [1, 2]


def test_blame_a_death_after_the_items_blames_the_unreported_rest_with_its_history() -> None:
    batch = batch_of(0, 1, 2)
    batch.memory_deaths, batch.alone = 1, True
    blamed, innocent = blame(batch, batched=False, reported={0}, running=None, items_over=True)
    assert innocent is None and blamed is not None
    assert blamed.indices == [1, 2] and blamed.memory_deaths == 1 and blamed.alone
    assert blame(batch, batched=False, reported={0, 1, 2}, running=None, items_over=True) == (
        None,
        None,
    )
