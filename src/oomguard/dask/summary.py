"""summary.json for a job run by the cluster driver: the single-machine summary's keys,
and per node (by address) what it ran, what it lost, and which nodes left
(:meth:`~oomguard.dask.cluster.NodeTable.figures`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oomguard.engine.run_record import quantile_dict
from oomguard.metrics.exporter import BATCH_SECONDS

if TYPE_CHECKING:
    from oomguard.dask.driver import ClusterDriver


def cluster_summary(driver: ClusterDriver, end_wall: float) -> dict[str, Any]:
    journal = driver.journal
    quarantine_counts = journal.quarantine_counts()
    counts = {"success": journal.committed_count(), **quarantine_counts}
    counters = driver.ledger.counters
    duration = end_wall - driver.start_wall
    cluster = driver.cluster
    return {
        "status": driver.status,
        "failure": driver.failure,
        "function": driver.spec["function"],
        "source": driver.intake.source.description,
        "items_total": sum(counts.values()),
        "counts": counts,
        "quarantined": sum(quarantine_counts.values()),
        "attempts": journal.attempt_counts(),
        "sessions": len(journal.sessions()),
        "retries": counters.retries,
        "bisections": counters.bisections,
        "alone_runs": counters.alone_runs,
        "oom_kills": counters.oom_kills,
        "peak_rss_mb": None,  # each node's: its attempts' peaks are in the manifest
        "peak_cgroup_mb": None,
        "duration_sec": round(duration, 3),
        "throughput_items_per_sec": round(counters.done / duration, 2) if duration > 0 else None,
        "enforcement": "cluster",
        "workers": driver.config.workers,
        "batch_size": driver.config.batch_size,
        "batch_seconds": quantile_dict(driver.ledger.metrics, BATCH_SECONDS, 1.0),
        "cluster": {
            "address": cluster.address if cluster is not None else driver.config.cluster,
            "in_flight_per_node": driver.per_node,
            "nodes": driver.nodes.figures(),
            "lost": dict(driver.nodes.lost),
        },
        "events": list(driver.ledger.events),
    }
