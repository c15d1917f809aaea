"""The ledger: what the run has done, and making it durable — the one place that writes down.

Results go to the sink (through the ordered writer when asked), quarantined items,
attempts and events are staged, and a checkpoint makes them durable together: the sink
prepares what it holds, the journal commits it with everything staged in one
transaction, the sink commits, and quarantine.jsonl gets its lines. Every counter of the
run lives in :class:`Counters`; every event has one shape, ``{"time", "event", ...}``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomguard.classify import Status
from oomguard.engine.artifacts import open_private
from oomguard.engine.handles import Attempt
from oomguard.engine.items import Item
from oomguard.engine.quarantine import item_name, quarantine_line
from oomguard.engine.run_record import attempt_entry
from oomguard.engine.sinks import OrderedWriter, Results, Sink
from oomguard.journal.ranges import RangeSet
from oomguard.journal.store import Checkpoint, Journal, Quarantined
from oomguard.metrics.exporter import BATCH_SECONDS
from oomguard.metrics.registry import Registry

RECENT_EVENTS = 200  # events kept in memory for summary.json (all of them go to the journal)
ITEM_COST = "item_cost_bytes"  # the metrics label of the per-item memory cost


@dataclass
class Counters:
    succeeded: int = 0
    quarantined: collections.Counter[str] = field(default_factory=collections.Counter)
    oom_kills: int = 0
    bystanders: int = 0
    backend_failures: int = 0  # items requeued because the backend failed them
    retries: int = 0
    bisections: int = 0
    alone_runs: int = 0
    worker_starts: int = 0
    recycled: int = 0
    malloc_trims: int = 0
    group_restarts: int = 0
    side_batches: int = 0  # dispatched beside a runaway, held at a ceiling
    side_stalls: int = 0  # of those, found stalled at their ceiling when released

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def done(self) -> int:
        return self.succeeded + self.quarantined_total

    def by_status(self) -> dict[str, int]:
        """Items finished, by status (the exporter's ``oomguard_items_total``)."""
        return {"success": self.succeeded, **self.quarantined}


class Ledger:
    def __init__(
        self, journal: Journal, sink: Sink, run_dir: Path, *, ordered: bool, done: RangeSet
    ) -> None:
        self.journal = journal
        self.sink = sink
        self.writer: Sink | OrderedWriter = OrderedWriter(sink, done) if ordered else sink
        self.counters = Counters()
        # batch latency and per-item memory cost, in a fixed budget (12 one-minute windows)
        self.metrics = Registry("4MiB", windows=12, window_seconds=60.0)
        self.events: list[dict[str, Any]] = []  # the most recent, for summary.json
        self.last_checkpoint = time.monotonic()
        self._quarantined: list[Quarantined] = []
        self.last_failed: str | None = None  # the last item quarantined, for the progress line
        self._attempts: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._quarantine_file = open_private(run_dir / "quarantine.jsonl", "a")
        # an embedding's hook (engine/hooks.py), told of each quarantined item at once
        self.on_quarantine: Callable[[Item, Status, dict[str, Any]], None] | None = None

    def event(self, name: str, *, at: float | None = None, **fields: Any) -> None:
        """A change of state, journaled with the next checkpoint (``at``: when, if not now)."""
        self.add_event({"time": time.time() if at is None else at, "event": name, **fields})

    def add_event(self, event: dict[str, Any]) -> None:
        """An event already in the one shape (the backend's own, say)."""
        self.events.append(event)
        del self.events[:-RECENT_EVENTS]
        self._events.append(event)

    def commit(self, results: list[Results]) -> None:
        """Results that succeeded go to the sink (durable at the next checkpoint)."""
        if not results:
            return
        self.writer.write(results)  # in input order within the batch, as the worker ran them
        self.counters.succeeded += sum(map(len, results))

    def quarantine(self, item: Item, status: Status, evidence: dict[str, Any]) -> None:
        self._quarantined.append((item.index, str(status), evidence, item.label))
        self.last_failed = f"{item_name(item.index, item.label)} {status}"
        self.counters.quarantined[str(status)] += 1
        if isinstance(self.writer, OrderedWriter):
            self.writer.skip(item.index)
        if self.on_quarantine is not None:
            self.on_quarantine(item, status, evidence)

    def record_attempt(
        self,
        attempt: Attempt,
        pid: int,
        status: Status,
        *,
        held: bool = False,
        error: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        bystander: bool = False,
        peak: int | None = None,
        cost: int | None = None,
        running: int | None = None,
    ) -> None:
        """The manifest's entry for an attempt that ended now, and its metrics (``cost``:
        what a successful batch needed, :meth:`Attempt.cost`)."""
        end = time.time()
        self._attempts.append(
            attempt_entry(
                attempt,
                pid,
                status,
                peak,
                end,
                held=held,
                error=error,
                evidence=evidence,
                stats=stats,
                bystander=bystander,
                running=running,
            )
        )
        self.metrics.record(BATCH_SECONDS, end - attempt.started_wall)
        items = attempt.batch.items
        if cost is not None and items:
            self.metrics.record(ITEM_COST, cost / len(items))

    def maybe_checkpoint(self, interval: float, *, final: bool = False) -> None:
        """Make results durable and journal them with everything else, in one transaction
        (at most once per ``interval`` seconds, unless ``final``)."""
        if not final and time.monotonic() - self.last_checkpoint < interval:
            return
        self.last_checkpoint = time.monotonic()
        prepared = self.sink.prepare(final)
        if not (prepared or self._quarantined or self._attempts or self._events):
            return
        quarantined = self._quarantined
        self.journal.checkpoint(
            Checkpoint(
                committed=prepared.indices if prepared else [],
                token=prepared.token if prepared else None,
                quarantined=quarantined,
                attempts=self._attempts,
                events=self._events,
            )
        )
        self._quarantined, self._attempts, self._events = [], [], []
        if prepared:
            self.sink.commit(prepared)
        for index, status, evidence, *label in quarantined:
            entry = {"input_index": index, "status": status, "evidence": evidence}
            if label and label[0] is not None:
                entry = {"input_index": index, "label": label[0], **entry}
            self._quarantine_file.write(quarantine_line(entry))
        self._quarantine_file.flush()

    def close(self) -> None:
        for closer in (self.sink.close, self._quarantine_file.close):
            try:
                closer()
            except Exception:
                pass
