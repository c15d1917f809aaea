"""The driver's view of the cluster: the Dask client (to a scheduler, or to a
``LocalCluster`` it starts for ``local:N``), the nodes it has, their share of the work,
and why one left.

Each node gets the node engine (:class:`~oomguard.dask.plugin.OomguardPlugin`) with the
job's workers per node and its budget. Dask's own retries stay off (``retries=0``); on a
``LocalCluster`` the scheduler's ``allowed-failures`` is 0 as well, so a batch whose node
died comes back to the driver, which sends it elsewhere itself (on a scheduler of the
user's, Dask may send it elsewhere first: the driver commits it once either way).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oomguard.classify import Status
from oomguard.dask.address import parse_cluster
from oomguard.dask.node import NodeResult
from oomguard.dask.plugin import NAME, OomguardPlugin
from oomguard.engine.config import JobConfig
from oomguard.engine.items import Batch
from oomguard.engine.ledger import Ledger
from oomguard.errors import OomguardError
from oomguard.sizes import mib

CONNECT_TIMEOUT = 30.0  # seconds to reach the scheduler
NODES_AWAY = 120.0  # seconds without a scheduler or a node before the run stops
# seconds the client tries to reach its scheduler again once it lost it, before it closes
# for good: past NODES_AWAY, so that the driver's own limit (and its message) comes first
RECONNECT_TIMEOUT = NODES_AWAY + CONNECT_TIMEOUT
NODES_TIMEOUT = 120.0  # seconds for a first node to join


class Cluster:
    """The client, and the ``LocalCluster`` behind it for ``local:N``."""

    def __init__(self, client: Any, address: str, local: Any = None, scratch: Path | None = None):
        self.client = client
        self.address = address
        self.local = local
        self.scratch = scratch
        self.plugin: Any = None

    def install(self) -> None:
        """The node engine on every node, and on each that joins."""
        self.client.register_plugin(self.plugin, name=NAME)

    def submit(self, executor: str, node: str, *args: Any) -> Any:
        import dask

        from oomguard.dask.tasks import run_batch

        with dask.annotate(executor=executor):
            return self.client.submit(
                run_batch, *args, workers=[node], allow_other_workers=True, retries=0, pure=False
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.local.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def open_cluster(config: JobConfig, memory: int, run_dir: Path) -> Cluster:
    """Connect (or start ``local:N``), install the node engine on every node, and wait for
    a first node. ``memory``: each node's budget (``local:N`` shares it out: one machine)."""
    import dask
    from distributed import Client, LocalCluster

    assert config.cluster is not None
    address, count = parse_cluster(config.cluster)
    local = scratch = None
    node_memory = memory
    if count is not None:
        scratch = run_dir / "dask-scratch"
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            local = LocalCluster(
                n_workers=count,
                threads_per_worker=config.workers,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False},
                worker_dashboard_address=None,
                memory_limit=0,  # the node engine caps memory; Dask's nanny must not
                local_directory=str(scratch),
            )
        client = Client(local)
        address = f"local:{count}"
        node_memory = memory // count
    else:
        client = Client(address, timeout=CONNECT_TIMEOUT)
        # the client reconnects within its ``timeout`` (distributed keeps it as _timeout,
        # its reconnect deadline: dask/distributed#2639), then closes; a scheduler that
        # restarts takes longer than a first connection may
        client._timeout = RECONNECT_TIMEOUT
    cluster = Cluster(client, address, local, scratch)
    cluster.plugin = OomguardPlugin(
        node_memory, config.workers, worker_memory=config.worker_memory, limiter=config.limiter
    )
    try:
        cluster.install()
        client.wait_for_workers(1, timeout=NODES_TIMEOUT)
    except BaseException:
        cluster.close()
        raise
    return cluster


class NodeTable:
    """The nodes the scheduler has, what each did, and the events of their coming and going.

    Nodes are known by their address (as the manifest and the events name them), and by
    the name Dask gives each (``dask worker --name``). :meth:`figures` is each node's
    record, the one that summary.json and the Prometheus exporter (another thread) read.
    """

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.stats: dict[str, Counter[str]] = {}
        self.lost: dict[str, str] = {}  # node -> the reason Dask gave
        self.named: dict[str, str] = {}  # node -> its Dask name
        self.peaks: dict[str, int] = {}  # node -> the highest peak of its attempts, bytes
        self._lock = threading.Lock()  # the exporter's thread reads what the loop writes
        self.checked = 0.0
        self.seen = False  # the first look: the nodes there at the start join no one
        self.away_since: float | None = None  # no scheduler, or no node, since (monotonic)
        self.scheduler_away = False
        self.scheduler_id: str | None = None  # the scheduler's own id: a new one on a restart
        self.came_back = False

    def names(self) -> list[str]:
        return sorted(self.live)

    def due(self, interval: float) -> bool:
        return time.monotonic() - self.checked >= interval

    def refresh(self, client: Any, ledger: Ledger) -> None:
        self.checked = time.monotonic()
        info = scheduler_info(client)
        if info is None:
            # the scheduler is away: the client reconnects, the nodes stay as known
            self.away_since = self.away_since or time.monotonic()
            self.scheduler_away = True
            return
        workers = info["workers"]
        now = set(workers)
        self._note_scheduler(info.get("id"), now, ledger)
        self.away_since = None if now else self.away_since or time.monotonic()
        for gone in sorted(self.live - now):
            reason = removal_reason(client, gone)
            with self._lock:
                self.lost[gone] = reason
            ledger.event("node_lost", node=gone, reason=reason)
        for new in sorted(now - self.live):
            name = str(workers[new].get("name", new))
            if self.seen:
                ledger.event("node_joined", node=new, node_name=name)
            with self._lock:
                self.named[new] = name
                self.stats.setdefault(new, Counter())
        with self._lock:
            self.live = now
        self.seen = True

    def _note_scheduler(self, scheduler_id: str | None, now: set[str], ledger: Ledger) -> None:
        """A scheduler of another id than the last look's is a new one (restarted on the
        same address): it knows no plugin and none of the batches sent before, and the
        driver installs and sends again. Its id tells, not a failed look: the client
        reconnects within its connect timeout, so a quick restart fails no look, and the
        same scheduler back after a look failed still has the plugin."""
        known, self.scheduler_id = self.scheduler_id, scheduler_id
        self.scheduler_away = False
        if known is not None and scheduler_id != known:
            self.came_back = True
            ledger.event("scheduler_back", nodes=sorted(now))

    def check_away(self, limit: float) -> None:
        """Stop the run (resumable) when there has been no scheduler or no node for ``limit``."""
        if self.away_since is not None and time.monotonic() - self.away_since > limit:
            raise OomguardError(
                f"no Dask scheduler or node for {limit:.0f} s: the run stops (resume it once "
                "the cluster is back)"
            )

    def with_room(self, per_node: int, flights: Iterable[Any]) -> str | None:
        """The live node with the fewest batches in flight, if it has fewer than ``per_node``
        (none while the scheduler is away: a batch waits for the scheduler that comes back)."""
        if not self.live or self.scheduler_away:
            return None
        busy = Counter(flight.node for flight in flights)
        node = min(self.live, key=lambda name: (busy[name], name))
        return node if busy[node] < per_node else None

    def note_attempt(self, result: NodeResult, batch: Batch, status: Status) -> None:
        with self._lock:
            stats = self.stats.setdefault(result.node, Counter())
            stats["batches"] += 1
            stats["items"] += len(batch.items)
            stats["items_done"] += sum(map(len, result.results))
            stats[str(status)] += 1
            if result.status == Status.OOM_KILLED:
                stats["oom_kills"] += 1
            if result.peak is not None and result.peak > self.peaks.get(result.node, -1):
                self.peaks[result.node] = result.peak

    def figures(self, in_flight: Counter[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each node's record, by address: its Dask name, whether it is connected, its
        attempts (``batches``, ``items`` in them, ``items_done``, a count per status),
        ``oom_kills``, ``batches_lost``, ``peak_mb`` (None before a peak is known), the
        reason it left (``left``: Dask's, None while connected), and with ``in_flight``
        the batches it has now."""
        with self._lock:
            figures: dict[str, dict[str, Any]] = {}
            for node, stats in sorted(self.stats.items()):
                peak = self.peaks.get(node)
                record: dict[str, Any] = {
                    "name": self.named.get(node, node),
                    "connected": node in self.live,
                    **{key: 0 for key in ("batches", "items", "items_done", "oom_kills")},
                    "batches_lost": 0,
                    **stats,
                    "peak_mb": mib(peak) if peak is not None else None,
                    "left": self.lost.get(node),
                }
                if in_flight is not None:
                    record["in_flight"] = in_flight[node]
                figures[node] = record
            return figures

    def loss_reason(self, cluster: Any, node: str, error: BaseException | None) -> str:
        """Why a batch's future failed without a report: its node's loss, in Dask's words."""
        what = f"{type(error).__name__}: {error}" if error is not None else "cancelled"
        removed = "unknown"
        if node not in self.lost and cluster is not None and not self.scheduler_away:
            removed = removal_reason(cluster.client, node)
        with self._lock:
            if removed != "unknown":
                self.lost[node] = removed
            self.stats.setdefault(node, Counter())["batches_lost"] += 1
        known = "the scheduler away" if self.scheduler_away else "still known to the scheduler"
        return f"{what} (node {node}: {self.lost.get(node, known)})"


def scheduler_info(client: Any) -> dict[str, Any] | None:
    """The scheduler's identity (its id, its workers), or None while the client has no
    connection to one: then the client's last copy is all it would give (distributed
    answers a failed look with it), after a wait of up to its connect timeout."""
    if client.status != "running":
        return None
    try:
        info = client.scheduler_info(n_workers=-1)
    except Exception:
        return None
    return info if isinstance(info.get("workers"), dict) else None


def removal_reason(client: Any, node: str) -> str:
    """The scheduler's record of ``node``'s removal (its stimulus: a closed connection, a
    missed heartbeat, a retirement), or "unknown"."""
    try:
        events = client.get_events("all")
    except Exception:
        return "unknown"
    for _, message in reversed(list(events)):
        if (
            isinstance(message, dict)
            and message.get("action") == "remove-worker"
            and message.get("worker") == node
        ):
            return str(message.get("stimulus_id", "removed"))
    return "unknown"
