"""Prometheus exposition of a run, through prometheus_client. Off unless a port is given;
bound to 127.0.0.1 unless told otherwise.

    oomguard_items_total{status}              items finished, by status
    oomguard_oom_kills_total                  OOM kills seen (kernel or watchdog)
    oomguard_memory_bytes{scope}              job (cgroup), worker (sum of RSS), supervisor (RSS)
    oomguard_memory_budget_bytes              the job's cap
    oomguard_batch_seconds{quantile}          batch duration quantiles, _count, _sum
    oomguard_metrics_sketch_bytes             bytes held by oomguard's own metrics registry
    oomguard_label_overflow_total             values folded into the overflow label
    oomguard_backend_restarts_total           model backend restarts
plus prometheus_client's standard process_* and python_* metrics. A job on a Dask cluster
(``cluster=``) adds, per node (labels ``node``: the Dask worker's name, ``address``):

    oomguard_nodes_connected                  nodes connected to the scheduler now
    oomguard_node_connected{node,address}     1 while connected, 0 once it left
    oomguard_node_batches_total{...}          batch attempts the node reported
    oomguard_node_items_total{...}            items the node reported done
    oomguard_node_oom_kills_total{...}        OOM kills on the node
    oomguard_node_batches_lost_total{...}     batches lost with the node (sent elsewhere)
    oomguard_node_in_flight{...}              batches sent to the node, not yet settled
"""

from __future__ import annotations

import ipaddress
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from oomguard.errors import ConfigError, OomguardWarning
from oomguard.metrics.registry import Registry

BATCH_SECONDS = "batch_seconds"
QUANTILES = (0.5, 0.9, 0.99)
# a node's figure (oomguard.dask.cluster.NodeTable.figures) -> its metric, kind and help
NODE_METRICS = (
    ("connected", "oomguard_node_connected", "gauge", "1 while the node is connected, 0 after."),
    ("batches", "oomguard_node_batches", "counter", "Batch attempts the node reported."),
    ("items_done", "oomguard_node_items", "counter", "Items the node reported done."),
    ("oom_kills", "oomguard_node_oom_kills", "counter", "OOM kills on the node."),
    ("batches_lost", "oomguard_node_batches_lost", "counter", "Batches lost with the node."),
    ("in_flight", "oomguard_node_in_flight", "gauge", "Batches in flight on the node."),
)


@dataclass
class RunNumbers:
    """What the engine knows right now (read by the collector on every scrape)."""

    items: dict[str, int] = field(default_factory=dict)
    oom_kills: int = 0
    job_bytes: int = 0  # charged to the job's cgroup, page cache included
    job_working_set_bytes: int = 0  # that, less the inactive file cache: what decisions use
    worker_bytes: int = 0
    supervisor_bytes: int = 0
    budget_bytes: int = 0
    backend_restarts: int = 0
    # a job on a Dask cluster: each node's figures, by address (None on one machine)
    nodes: dict[str, dict[str, Any]] | None = None


class OomguardCollector:
    def __init__(self, numbers: Callable[[], RunNumbers], registry: Registry) -> None:
        self.numbers = numbers
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

        now = self.numbers()
        items = CounterMetricFamily(
            "oomguard_items", "Items finished, by status.", labels=["status"]
        )
        for status, count in sorted(now.items.items()):
            items.add_metric([status], count)
        yield items
        yield CounterMetricFamily("oomguard_oom_kills", "OOM kills seen.", value=now.oom_kills)
        memory = GaugeMetricFamily(
            "oomguard_memory_bytes",
            "Memory in use, by scope (job: charged to the job's cap, page cache included; "
            "job_working_set: that less the inactive file cache, what admission uses).",
            labels=["scope"],
        )
        memory.add_metric(["job"], now.job_bytes)
        memory.add_metric(["job_working_set"], now.job_working_set_bytes)
        memory.add_metric(["worker"], now.worker_bytes)
        memory.add_metric(["supervisor"], now.supervisor_bytes)
        yield memory
        yield GaugeMetricFamily(
            "oomguard_memory_budget_bytes", "The job's memory cap.", value=now.budget_bytes
        )
        summary = Metric("oomguard_batch_seconds", "Batch attempt duration.", "summary")
        if BATCH_SECONDS in self.registry.labels():
            for q in QUANTILES:
                value = self.registry.quantile(BATCH_SECONDS, q)
                if value is not None:
                    summary.add_sample("oomguard_batch_seconds", {"quantile": str(q)}, value)
            summary.add_sample(
                "oomguard_batch_seconds_count", {}, self.registry.count(BATCH_SECONDS)
            )
            summary.add_sample("oomguard_batch_seconds_sum", {}, self.registry.sum(BATCH_SECONDS))
        else:
            summary.add_sample("oomguard_batch_seconds_count", {}, 0)
            summary.add_sample("oomguard_batch_seconds_sum", {}, 0.0)
        yield summary
        yield GaugeMetricFamily(
            "oomguard_metrics_sketch_bytes",
            "Bytes held by oomguard's metrics registry.",
            value=self.registry.memory_bytes(),
        )
        yield CounterMetricFamily(
            "oomguard_label_overflow",
            "Values folded into the overflow label.",
            value=self.registry.overflow_total,
        )
        yield CounterMetricFamily(
            "oomguard_backend_restarts", "Model backend restarts.", value=now.backend_restarts
        )
        if now.nodes is not None:
            yield from node_families(now.nodes)


def node_families(nodes: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """The per-node metrics of a job on a Dask cluster."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(
        "oomguard_nodes_connected",
        "Dask nodes connected to the scheduler.",
        value=sum(bool(figures.get("connected")) for figures in nodes.values()),
    )
    for key, name, kind, text in NODE_METRICS:
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(name, text, labels=["node", "address"])
        for address, figures in sorted(nodes.items()):
            if key in figures:
                family.add_metric([str(figures.get("name", address)), address], float(figures[key]))
        yield family


def build_registry(numbers: Callable[[], RunNumbers], registry: Registry) -> Any:
    """A prometheus_client CollectorRegistry with ours and the standard process metrics."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    collectors = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=collectors)
    PlatformCollector(registry=collectors)
    collectors.register(OomguardCollector(numbers, registry))
    return collectors


def check_endpoint(addr: str, port: int) -> None:
    """Refuse an address that is none or a port in use (one line, before any work), and warn
    when the endpoint would be reachable from the network: it has no authentication."""
    try:
        found = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"invalid metrics_addr {addr!r}: {err}") from None
    family, kind, proto, _, where = found[0]
    if not all(ipaddress.ip_address(info[4][0]).is_loopback for info in found):
        warnings.warn(
            OomguardWarning(
                f"metrics on {addr}:{port} can be read from the network, with no "
                "authentication; bind 127.0.0.1 (the default) unless that is what you want"
            ),
            stacklevel=2,
        )
    if port == 0:
        return  # any free port
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(where)
        except OSError as err:
            raise ConfigError(
                f"cannot serve metrics on {addr}:{port}: {err.strerror or err}"
            ) from None


class Exporter:
    """The HTTP endpoint; ``close()`` stops it."""

    def __init__(
        self,
        numbers: Callable[[], RunNumbers],
        registry: Registry,
        port: int,
        addr: str = "127.0.0.1",
    ) -> None:
        from prometheus_client import start_http_server

        self.collectors = build_registry(numbers, registry)
        try:
            self._server, self._thread = start_http_server(
                port, addr=addr, registry=self.collectors
            )
        except OSError as err:  # taken since check_endpoint looked
            raise ConfigError(
                f"cannot serve metrics on {addr}:{port}: {err.strerror or err}"
            ) from None
        self.port = self._server.server_port
        self.addr = addr

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
