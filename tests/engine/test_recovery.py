"""The recovery ladder, rung by rung (pure policy, no processes)."""

from oomguard.classify import Status, classify_exception
from oomguard.engine.items import Batch, Item
from oomguard.engine.recovery import Policy, after_failure, pin_item, retry_uncounted

POLICY = Policy(crash_retries=2, error_retries=0)


def batch_of(n: int) -> Batch:
    return Batch([Item(i, i, 1) for i in range(n)])


def test_memory_death_retry_then_alone_then_bisect_then_quarantine() -> None:
    batch = batch_of(4)
    first = after_failure(batch, Status.OOM_KILLED, died_alone=False, policy=POLICY)
    assert first.action == "retry" and first.retry == [batch]
    second = after_failure(batch, Status.OOM_KILLED, died_alone=False, policy=POLICY)
    assert second.action == "alone" and second.alone == [batch] and batch.alone
    third = after_failure(batch, Status.OOM_KILLED, died_alone=False, policy=POLICY)
    assert third.action == "bisect"
    halves = third.retry
    assert [h.indices for h in halves] == [[0, 1], [2, 3]]
    assert all(
        not h.alone and h.memory_deaths == 0 and h.parent_id == batch.batch_id for h in halves
    )
    single = batch_of(1)
    single.alone = True
    final = after_failure(single, Status.MEMORY_ERROR, died_alone=False, policy=POLICY)
    assert final.action == "quarantine" and final.quarantine == single.items


def test_dying_at_nearly_the_whole_budget_counts_as_alone() -> None:
    single = batch_of(1)
    decision = after_failure(single, Status.OOM_KILLED, died_alone=True, policy=POLICY)
    assert decision.action == "quarantine"
    assert (
        after_failure(batch_of(3), Status.OOM_KILLED, died_alone=True, policy=POLICY).action
        == "bisect"
    )


def test_crashes_retry_n_times_then_bisect() -> None:
    batch = batch_of(2)
    assert after_failure(batch, Status.TIMEOUT, died_alone=False, policy=POLICY).action == "retry"
    assert (
        after_failure(batch, Status.WORKER_CRASH, died_alone=False, policy=POLICY).action == "retry"
    )
    assert (
        after_failure(batch, Status.WORKER_CRASH, died_alone=False, policy=POLICY).action
        == "bisect"
    )


def test_errors_are_not_retried_by_default() -> None:
    assert (
        after_failure(batch_of(1), Status.ERROR, died_alone=False, policy=POLICY).action
        == "quarantine"
    )
    assert (
        after_failure(batch_of(4), Status.ERROR, died_alone=False, policy=POLICY).action == "bisect"
    )
    retrying = Policy(error_retries=1)
    batch = batch_of(1)
    assert after_failure(batch, Status.ERROR, died_alone=False, policy=retrying).action == "retry"
    assert (
        after_failure(batch, Status.ERROR, died_alone=False, policy=retrying).action == "quarantine"
    )


def test_bystander_history_is_untouched() -> None:
    batch = batch_of(3)
    batch.memory_deaths = 1
    decision = retry_uncounted(batch)
    assert decision.retry == [batch] and batch.memory_deaths == 1


def test_pin_item() -> None:
    batch = batch_of(5)
    pinned, rest = pin_item(batch, {0, 1})
    assert pinned is not None and pinned.index == 2
    assert [i.index for i in rest] == [3, 4]
    assert pin_item(batch, {0, 1, 2, 3, 4}) == (None, [])


def test_pin_item_blames_the_item_the_worker_marked_running() -> None:
    batch = batch_of(5)
    # items 0-2 finished but were not reported yet when item 3 killed the worker
    pinned, rest = pin_item(batch, set(), running=3)
    assert pinned is not None and pinned.index == 3
    assert [i.index for i in rest] == [0, 1, 2, 4]  # run again, uncounted


def test_classify_exceptions() -> None:
    assert classify_exception(MemoryError()) is Status.MEMORY_ERROR
    assert (
        classify_exception(RuntimeError("CUDA out of memory. Tried to allocate"))
        is Status.MEMORY_ERROR
    )
    assert classify_exception(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED")) is Status.MEMORY_ERROR
    assert classify_exception(ValueError("bad value")) is Status.ERROR
