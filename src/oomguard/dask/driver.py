"""The cluster driver: a job's exactly-once part on this machine, its batches on Dask nodes.

::

    source ─► reader ─► Intake ─► next batch ──► client.submit(run_batch, executor=
       (the driver's)      ▲                      "oomguard-node", retries=0, a node
                           │                      with room)       │
                           │ Decision                              ▼
                      recovery.py ◄── Settle ◄── NodeResult ◄── node engine (oomguard.dask.node)
                      (the ladder)      │                       one attempt, capped workers
                                        ▼
                     Ledger: sink, quarantine, attempts, events ─► journal (SQLite WAL)

The driver keeps what must be exactly once: reading the source, the journal, the sink,
quarantine and the ladder's final word; the nodes run attempts and report them whole. At
most ``per_node`` batches are in flight per node (its workers, and one more queued so a
worker never waits on the network); never the whole input. A node that leaves (its
process tree killed, its machine gone) is an event with the reason Dask gives; what it
was running is retried elsewhere, uncounted: nothing of it was committed. The loop waits
on one descriptor set: an eventfd that futures' callbacks write, and the reader's
wake-up pipe.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomguard.classify import Status
from oomguard.dask.cluster import NODES_AWAY, Cluster, NodeTable, open_cluster
from oomguard.dask.node import NodeResult
from oomguard.dask.plugin import BATCHES
from oomguard.dask.settle import Settle
from oomguard.dask.summary import cluster_summary
from oomguard.engine.artifacts import write_json
from oomguard.engine.batch_size import room_to_grow
from oomguard.engine.config import JobConfig
from oomguard.engine.intake import Intake
from oomguard.engine.items import Batch
from oomguard.engine.ledger import Ledger
from oomguard.engine.progress import Progress, Snapshot
from oomguard.engine.recovery import Policy
from oomguard.engine.run_record import write_manifest
from oomguard.engine.sinks import Sink
from oomguard.engine.sources import Source
from oomguard.errors import OomguardError, SinkError
from oomguard.journal.ranges import RangeSet
from oomguard.journal.store import Journal, JournalLost
from oomguard.memory.own import own_rss
from oomguard.metrics.exporter import Exporter, RunNumbers

IDLE_WAIT = 0.5  # seconds the loop waits at most when nothing is due sooner
FETCH_TIMEOUT = 10.0  # seconds to fetch a finished batch's report before it counts as lost
NODE_CHECK = 0.5  # seconds between looks at which nodes the scheduler has


@dataclass
class Flight:
    """A batch sent to a node, until its future settles."""

    batch: Batch
    node: str
    alone: bool
    sent: float  # monotonic


class ClusterDriver:
    def __init__(
        self,
        config: JobConfig,
        source: Source,
        sink: Sink,
        run_dir: Path,
        progress: Progress,
        function_spec: str,
        memory: int,
        journal: Journal,
        done: RangeSet | None = None,
        only: RangeSet | None = None,
    ) -> None:
        """``memory``: each node's budget for its workers."""
        assert config.cluster is not None
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        self.memory = memory
        self.journal = journal
        done = done if done is not None else RangeSet()
        self.ledger = Ledger(journal, sink, run_dir, ordered=config.ordered, done=done)
        self.intake = Intake(config, source, self.ledger, done=done, only=only)
        policy = Policy(config.crash_retries, config.error_retries)
        self.settle = Settle(self.ledger, self.intake, policy, batched=config.batched)
        self.spec = {
            "function": function_spec,
            "batched": config.batched,
            "encode_json": sink.wants_json,
            "sys_path": [*filter(None, [config.import_path]), os.getcwd(), *sys.path],
            "trim": config.trim,
            "rlimit_as": config.rlimit_as,
        }
        self.per_node = config.max_in_flight or config.workers + 1
        self.flights: dict[Any, Flight] = {}
        self.done_futures: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.cluster: Cluster | None = None
        self.nodes = NodeTable()
        self.start = time.monotonic()
        self.start_wall = time.time()
        self.session = 0
        self.status = "finished"
        self.failure: str | None = None
        self.exporter: Exporter | None = None

    # ---------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            while not self.finished():
                self.fill()
                self.wait_and_handle()
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        except BaseException as err:
            self.status, self.failure = "failed", f"{type(err).__name__}: {err}"
            raise
        finally:
            summary = self.teardown()
        return summary

    def setup(self) -> None:
        self.session = self.journal.begin_session()
        self.reader = self.intake.start()
        self.cluster = open_cluster(self.config, self.memory, self.run_dir)
        self.nodes.refresh(self.cluster.client, self.ledger)
        self.ledger.event("cluster", address=self.cluster.address, nodes=self.nodes.names())
        if self.config.metrics_port is not None:
            self.exporter = Exporter(
                self.numbers,
                self.ledger.metrics,
                self.config.metrics_port,
                self.config.metrics_addr,
            )

    def finished(self) -> bool:
        return self.intake.exhausted() and not self.flights

    def fill(self) -> None:
        """Send batches while a node has room (alone batches to a node with none beside)."""
        while True:
            node = self.nodes.with_room(self.per_node, self.flights.values())
            if node is None:
                return
            batch, alone = self._next_batch(node)
            if batch is None:
                return
            self.send(batch, node, alone)

    def _next_batch(self, node: str) -> tuple[Batch | None, bool]:
        if self.intake.alone:
            self.ledger.counters.alone_runs += 1
            return self.intake.alone.popleft(), True
        batch = self.intake.next_batch(suspect_in_flight=False, fitting=lambda size: size)
        return batch, bool(batch is not None and batch.alone)

    def send(self, batch: Batch, node: str, alone: bool) -> None:
        assert self.cluster is not None
        batch.attempt += 1
        items = [(item.index, item.value) for item in batch.items]
        future = self.cluster.submit(
            BATCHES,
            node,
            self.spec,
            batch.batch_id,
            items,
            alone,
            batch.attempt,
            self.config.timeout,
        )
        self.flights[future] = Flight(batch, node, alone, time.monotonic())
        future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        """A future settled (called on the client's thread): the loop wakes up."""
        self.done_futures.put(future)
        with contextlib.suppress(OSError):
            os.eventfd_write(self.wakeup, 1)

    def wait_and_handle(self) -> None:
        timeout = IDLE_WAIT
        deadline = self.intake.open_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        watched: list[Any] = [self.wakeup, self.reader]
        select.select(watched, [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.wakeup)
        while True:
            try:
                future = self.done_futures.get_nowait()
            except queue.Empty:
                break
            flight = self.flights.pop(future, None)
            if flight is not None:
                self.handle(future, flight)
        assert self.cluster is not None
        if self.nodes.due(NODE_CHECK):
            self.look()
            self.nodes.check_away(NODES_AWAY)
        self.ledger.maybe_checkpoint(self.config.commit_interval)
        if self.progress.due():
            self.progress.update(self.snapshot())

    def handle(self, future: Any, flight: Flight) -> None:
        """One settled future: an attempt's report, or the loss of its node."""
        error: BaseException | None = None
        if future.status == "finished":
            try:  # its report is fetched from its node, which may be gone since
                result: NodeResult = future.result(timeout=FETCH_TIMEOUT)
            except Exception as lost:
                error = lost
            else:
                status = self.settle.result(flight.batch, result, flight.alone)
                self.nodes.note_attempt(result, flight.batch, status)
                if status is Status.SUCCESS:
                    self._adapt_size(flight.batch, result)
                return
        elif future.status == "error":
            error = future.exception()
        if isinstance(error, OomguardError):
            raise error  # the function does not load on the node: the run stops, as here
        assert self.cluster is not None
        self.look()  # no batch goes to a gone node, nor to a new scheduler without the plugin
        reason = self.nodes.loss_reason(self.cluster, flight.node, error)
        self.ledger.event(
            "batch_lost",
            node=flight.node,
            batch_id=flight.batch.batch_id,
            items=len(flight.batch.items),
            reason=reason,
        )
        self.settle.lost(flight.batch, flight.node, reason)

    def _adapt_size(self, batch: Batch, result: NodeResult) -> None:
        """Adaptive batch size (engine/batch_size.py) from the batch's time on its node: a
        batch through Dask costs milliseconds more than through a local pool, so fast items
        need the longer batches the sizer grows. What a node would hold with this batch
        doubled: every one of its workers at twice this batch's peak."""
        doubled = 2 * (result.peak or 0) * self.config.workers
        self.intake.learn_batch_time(
            len(batch.items),
            result.seconds,
            lambda: room_to_grow(doubled, self.config.target, self.memory),
        )

    def look(self) -> None:
        """Which nodes the scheduler has; a new scheduler gets at once what it lacks."""
        assert self.cluster is not None
        self.nodes.refresh(self.cluster.client, self.ledger)
        if self.nodes.came_back:
            self.scheduler_back()

    def scheduler_back(self) -> None:
        """A new scheduler knows none of the batches in flight, nor the plugin: every
        batch goes again, uncounted (nothing of them was committed), and the node engine
        is installed again."""
        assert self.cluster is not None
        self.nodes.came_back = False
        self.cluster.install()
        for future, flight in list(self.flights.items()):
            del self.flights[future]
            with contextlib.suppress(Exception):
                future.cancel()
            self.settle.lost(flight.batch, flight.node, "the scheduler restarted")
        self.ledger.event("batches_resent", reason="the scheduler restarted")

    def snapshot(self) -> Snapshot:
        counters = self.ledger.counters
        return Snapshot(
            done=counters.done,
            total=self.intake.total,
            succeeded=counters.succeeded,
            quarantined=counters.quarantined_total,
            in_flight=len(self.flights),
            oom_kills=counters.oom_kills,
            memory_used=0,
            memory_cap=self.budget(),
            elapsed=time.monotonic() - self.start,
        )

    def budget(self) -> int:
        """The cluster's memory: each node's budget, times the nodes connected."""
        return self.memory * max(1, len(self.nodes.live))

    def numbers(self) -> RunNumbers:
        """For the Prometheus exporter (called from its thread: reads only): the job's
        figures, and each node's."""
        # one C-level copy: the loop's thread may add or settle a flight meanwhile
        flights = tuple(self.flights.values())
        # the nodes first: the loop commits an attempt's items before it notes them on its
        # node, so the items a scrape shows per node never add up past the job's
        nodes = self.nodes.figures(Counter(flight.node for flight in flights))
        counters = self.ledger.counters
        return RunNumbers(
            items=counters.by_status(),
            oom_kills=counters.oom_kills,
            supervisor_bytes=own_rss(),
            budget_bytes=self.budget(),
            nodes=nodes,
        )

    # ---------------------------------------------------------------- the end

    def teardown(self) -> dict[str, Any]:
        if self.exporter is not None:
            self.exporter.close()
        for future in list(self.flights):
            with contextlib.suppress(Exception):
                future.cancel()
        self.flights.clear()
        for step in (self.intake.close, self._close_cluster):
            with contextlib.suppress(Exception):
                step()
        os.close(self.wakeup)
        if self.status != "failed" or "SinkError" not in (self.failure or ""):
            try:
                self.ledger.maybe_checkpoint(self.config.commit_interval, final=True)
            except (SinkError, JournalLost) as err:
                self.status = "failed"
                self.failure = self.failure or f"{type(err).__name__}: {err}"
        self.ledger.close()
        write_manifest(self.journal, self.run_dir / "ingest_manifest.json")
        summary = cluster_summary(self, time.time())
        write_json(self.run_dir / "summary.json", summary)
        self.journal.end_session(self.session, self.status)
        self.progress.close(self.snapshot(), finished=self.status == "finished")
        return summary

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
