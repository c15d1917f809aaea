"""Intake: the work waiting to run — the open batch and the queues of batches to send.

::

    reader thread ─► open batch ─► (full, old or final) ─┐
    pending:   retries and halves, first ────────────────┤
    suspects:  runaways stopped or killed, one at a time ┼─► next_batch() ─► dispatch
    alone:     batches that need the whole budget ───────┘     (held: formed, not admitted)
    set_aside: known to need more than the side room, until the runaway ends

A recovery :class:`~oomguard.engine.recovery.Decision` lands here (:meth:`Intake.apply`).
The size of a new batch is the sizer's (``engine/batch_size.py``), capped by the backend's
degrade limit and, where the source's length is known, by an equal share of what is left.
The supervisor never holds the input: the reader thread feeds a bounded queue.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from oomguard.classify import MEMORY_STATUSES, Status
from oomguard.engine.aimd import Aimd
from oomguard.engine.batch_size import BatchSizer
from oomguard.engine.config import JobConfig
from oomguard.engine.items import Batch, Item, Run, total_size
from oomguard.engine.ledger import Ledger
from oomguard.engine.reader import END, SourceReader
from oomguard.engine.recovery import Decision
from oomguard.engine.sources import Source
from oomguard.errors import OomguardError
from oomguard.journal.ranges import RangeSet


def make_sizer(config: JobConfig) -> BatchSizer:
    return BatchSizer(
        start=config.batch_size,
        low=config.min_batch_size,
        high=max(config.batch_size, config.max_batch_size)
        if config.adaptive_batch
        else config.batch_size,
        seconds=config.aimed_batch_seconds(),
        enabled=config.adaptive_batch,
    )


class Intake:
    def __init__(
        self,
        config: JobConfig,
        source: Source,
        ledger: Ledger,
        *,
        done: RangeSet,
        only: RangeSet | None,
    ) -> None:
        self.config = config
        self.source = source
        self.ledger = ledger
        self.done = done
        self.only = only
        self.pending: collections.deque[Batch] = collections.deque()
        self.alone: collections.deque[Batch] = collections.deque()
        self.suspects: collections.deque[Batch] = collections.deque()
        self.set_aside: collections.deque[Batch] = collections.deque()
        self.held: Batch | None = None  # formed, but not admitted yet
        self.open_items: Sequence[Item] = []  # a list, or a Run
        self.open_bytes = 0
        self.open_since = 0.0
        self.source_done = False
        self.total: int | None = None  # the source's count, once known
        self.read_up_to = 0  # one past the input index of the last item taken from the reader
        self.sizer = make_sizer(config)
        # the backend's degrade limit (AIMD after a backend OOM) caps whatever the sizer says
        self.batch_limit = Aimd(ceiling=self.sizer.high)
        self.reader: SourceReader | None = None

    # ---------------------------------------------------------------- lifecycle

    def learn_batch_time(self, items: int, seconds: float, plentiful: Callable[[], bool]) -> None:
        """A batch of ``items`` finished in ``seconds``: the sizer's next size (an event
        when it changed); ``plentiful`` is asked only when batches adapt."""
        if not self.sizer.enabled:
            return
        size = self.sizer.after_batch(items, seconds, plentiful())
        if size is not None:
            self.ledger.event("batch_size", batch_size=size)

    def start(self) -> SourceReader:
        """Start reading the source (and counting it, for progress and shares)."""
        capacity = max(256, 4 * self.config.workers * self.config.batch_size)
        every = self.only is None and not self.done.range_count  # a new run: no index to skip
        self.reader = SourceReader(self.source, capacity, None if every else self.wanted)
        self.reader.start()
        threading.Thread(target=self._count_source, name="oomguard-count", daemon=True).start()
        return self.reader

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def wanted(self, index: int) -> bool:
        if self.only is not None:
            return index in self.only
        return index not in self.done

    def _count_source(self) -> None:
        try:
            self.total = self.source.count()
        except Exception:
            self.total = None

    # ---------------------------------------------------------------- state

    def exhausted(self) -> bool:
        """Nothing left to send: the source is read and every queue is empty."""
        return (
            self.source_done
            and self.held is None
            and not self.open_items
            and not self.pending
            and not self.alone
            and not self.set_aside
            and not self.suspects
        )

    def open_deadline(self) -> float | None:
        """When the open batch is old enough to go, partial (monotonic); None if none, or
        with ``max_wait_ms = 0`` (it goes with the next free worker, whose freeing wakes
        the loop anyway)."""
        if not self.open_items or self.config.max_wait_ms == 0:
            return None
        return self.open_since + self.config.max_wait_ms / 1000

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

    # ---------------------------------------------------------------- taking work

    def next_batch(self, *, suspect_in_flight: bool, fitting: Callable[[int], int]) -> Batch | None:
        """The batch to send next: the held one, a suspect (never two in flight), a retry,
        or a new one. ``fitting(size)``: the size cut to what fits the memory left."""
        if self.held is not None:
            return self.held
        if self.suspects and not suspect_in_flight:
            return self.suspects.popleft()
        if self.pending:
            return self.pending.popleft()
        return self._take_new_batch(fitting)

    def _take_new_batch(self, fitting: Callable[[int], int]) -> Batch | None:
        """Fill the open batch from the reader; hand it out when full, old or final."""
        reader = self.reader
        assert reader is not None
        reader.drain_wakeups()
        config = self.config
        batch_size = min(self.batch_limit.limit, fitting(self.sizer.size))
        left = self.items_left()
        if left is not None:  # at most an equal share of what is left
            batch_size = min(batch_size, self.sizer.share(self.sizer.high, left, config.workers))
        lull = False  # the reader has nothing more for now
        while not self.source_done and len(self.open_items) < batch_size:
            try:
                taken = reader.take(batch_size - len(self.open_items))
            except queue.Empty:
                reader.waiting.set()
                if not reader.empty():
                    continue
                lull = True
                break
            batch = self._add_taken(taken)
            if batch is not None:
                return batch
        if not self.open_items:
            return None
        full = len(self.open_items) >= batch_size or self.open_bytes >= config.max_bytes
        old = time.monotonic() - self.open_since >= config.max_wait_ms / 1000
        if self.source_done or (lull and old and not full):
            # exhausted (perhaps during this fill): the open items are all left; or a lull
            # (a bounded read-ahead, a slow source): they are all there is for now, and one
            # worker taking them all would leave the others idle until its batch ends
            batch_size = self.sizer.share(batch_size, len(self.open_items), config.workers)
        if full or old or self.source_done:
            return self._close_open_batch(batch_size)
        return None

    def _add_taken(self, taken: Sequence[Any]) -> Batch | None:
        """Items from the reader into the open batch; the batch when ``max_bytes`` closes it
        (the items after it are given back)."""
        if isinstance(taken, Run) and self._continues(taken):
            return self._add_run(taken)
        if isinstance(self.open_items, Run):
            self.open_items = list(self.open_items)  # items one at a time from here
        open_items: list[Item] = self.open_items  # type: ignore[assignment]
        for position, item in enumerate(taken):
            if item is END:
                self.source_done = True
                if self.reader is not None and self.reader.error is not None:
                    raise OomguardError(
                        f"reading {self.source.description} failed: {self.reader.error}"
                    )
                return None
            self.read_up_to = item.index + 1
            if item.error is not None:
                self.ledger.quarantine(item, Status.ERROR, {"message": item.error})
                continue
            if open_items and self.open_bytes + item.size > self.config.max_bytes:
                assert self.reader is not None
                self.reader.give_back(taken[position + 1 :])
                batch = self._close_open_batch()
                self.open_items, self.open_bytes = [item], item.size
                self.open_since = time.monotonic()
                return batch
            if not open_items:
                self.open_since = time.monotonic()
            open_items.append(item)
            self.open_bytes += item.size
        return None

    def _continues(self, run: Run) -> bool:
        """The open batch is empty, or a run that ``run`` continues."""
        opened = self.open_items
        return not opened or (isinstance(opened, Run) and opened.stop == run.start)

    def _add_run(self, run: Run) -> Batch | None:
        """A run from the reader into the open batch (which it continues), as a run: what
        ``_add_taken`` does item by item, on the run's lists."""
        opened = self.open_items
        if opened:
            joined = opened.joined(run)  # type: ignore[attr-defined]
        else:
            joined = run
            self.open_since = time.monotonic()
        self.read_up_to = run.stop
        room = self.config.max_bytes - self.open_bytes
        size = sum(run.sizes)
        if size <= room:
            self.open_items, self.open_bytes = joined, self.open_bytes + size
            return None
        # the items whose running total fits; the first item of an empty batch always does
        fit = bisect.bisect_right(list(itertools.accumulate(run.sizes)), room)
        if not opened:
            fit = max(fit, 1)
        if fit == len(run):
            self.open_items, self.open_bytes = joined, self.open_bytes + size
            return None
        assert self.reader is not None
        self.reader.give_back(run[fit + 1 :])
        self.read_up_to = run.start + fit + 1
        self.open_items = joined[: len(opened) + fit]
        self.open_bytes += sum(run.sizes[:fit])
        batch = self._close_open_batch()
        self.open_items, self.open_bytes = run[fit : fit + 1], run.sizes[fit]
        self.open_since = time.monotonic()
        return batch

    def _close_open_batch(self, limit: int | None = None) -> Batch:
        """The open items as a batch (the first ``limit`` of them; the rest stay open)."""
        if limit is None or len(self.open_items) <= limit:
            batch = Batch(self.open_items)
            self.open_items, self.open_bytes = [], 0
            return batch
        batch = Batch(self.open_items[:limit])
        self.open_items = self.open_items[limit:]
        self.open_bytes = total_size(self.open_items)
        return batch

    # ---------------------------------------------------------------- putting work back

    def apply(self, decision: Decision, status: Status, evidence: dict[str, Any]) -> None:
        """A recovery decision: retries to the front, "alone" batches to their queue,
        quarantined items to the ledger. A batch killed for memory once (not alone) is
        retried as a suspect: never beside another, or two that grew into each other would
        do it again, each dying short of the budget."""
        if decision.action == "retry" and status in MEMORY_STATUSES:
            for batch in decision.retry:
                self.suspect(batch)
        else:
            for batch in reversed(decision.retry):
                self.pending.appendleft(batch)
        self.alone.extend(decision.alone)
        counters = self.ledger.counters
        if decision.action in ("retry", "retry_bystander"):
            counters.retries += 1
        elif decision.action == "bisect":
            counters.bisections += 1
        for item in decision.quarantine:
            self.ledger.quarantine(item, status, evidence)

    def suspect(self, batch: Batch) -> None:
        """A runaway stopped for a bigger one: it runs after it, never beside another such
        (each is admitted at what it reached, so two would fit side by side and grow into
        each other before either looked like a runaway again)."""
        batch.suspect = True
        self.suspects.append(batch)

    def release_set_aside(self) -> None:
        """The runaway is over: batches set aside for its end come first."""
        while self.set_aside:
            batch = self.set_aside.pop()
            (self.suspects if batch.suspect else self.pending).appendleft(batch)
