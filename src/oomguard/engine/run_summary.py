"""The run as numbers: the progress snapshot, what the Prometheus exporter reads, and
summary.json at the end."""

from __future__ import annotations

import time
from typing import Any

from oomguard.engine.admission import Admission
from oomguard.engine.aimd import Aimd
from oomguard.engine.backend_link import BackendLink
from oomguard.engine.config import JobConfig
from oomguard.engine.intake import Intake
from oomguard.engine.ledger import ITEM_COST, Ledger
from oomguard.engine.monitor import Monitor
from oomguard.engine.pool import WorkerPool
from oomguard.engine.progress import Snapshot
from oomguard.engine.run_record import quantile_dict
from oomguard.limits.base import GroupMemory, Limiter
from oomguard.memory.own import own_rss
from oomguard.metrics.exporter import BATCH_SECONDS, RunNumbers
from oomguard.sizes import mib

PAUSE_SHOWN_AFTER = 3.0  # seconds: a pause this long appears in the progress line
MEMORY_FIGURES = {
    "peak_rss_mb": "RSS of the supervisor and its workers, summed (the monitor's samples)",
    "peak_cgroup_mb": "charged to the job's cgroup, page cache included (the kernel's peak)",
    "peak_percent_of_cap": "peak_cgroup_mb as a share of the cap",
    "peak_working_set_mb": "charged less the inactive file cache, which the kernel drops "
    "before it kills (the kubelet's working set); what admission and the pause use",
}


class RunSummary:
    def __init__(
        self,
        config: JobConfig,
        memory: int,
        spec: dict[str, Any],
        limiter: Limiter,
        ledger: Ledger,
        pool: WorkerPool,
        intake: Intake,
        admission: Admission,
        concurrency: Aimd,
        backend: BackendLink,
        monitor: Monitor,
    ) -> None:
        self.config = config
        self.memory = memory
        self.spec = spec
        self.limiter = limiter
        self.ledger = ledger
        self.intake = intake
        self.pool = pool
        self.admission = admission
        self.concurrency = concurrency
        self.backend = backend
        self.monitor = monitor
        self.start_wall = time.time()
        self.start = time.monotonic()

    def snapshot(self) -> Snapshot:
        counters = self.ledger.counters
        return Snapshot(
            done=counters.done,
            total=self.intake.total,
            succeeded=counters.succeeded,
            quarantined=counters.quarantined_total,
            in_flight=self.pool.in_flight(),
            oom_kills=counters.oom_kills,
            memory_used=self.monitor.last_working_set,
            memory_cap=self.memory,
            elapsed=time.monotonic() - self.start,
            paused=self.admission.pause_shown(PAUSE_SHOWN_AFTER),
            last_failed=self.ledger.last_failed,
        )

    def numbers(self) -> RunNumbers:
        """For the Prometheus exporter (called from its thread: reads only)."""
        workers = 0
        for view in self.pool.views():
            try:
                workers += view.group.read().usage
            except OSError:
                continue
        counters = self.ledger.counters
        return RunNumbers(
            items=counters.by_status(),
            oom_kills=counters.oom_kills,
            job_bytes=self.monitor.last_cgroup,
            job_working_set_bytes=self.monitor.last_working_set,
            worker_bytes=workers,
            supervisor_bytes=own_rss(),
            budget_bytes=self.memory,
            backend_restarts=self.backend.backend.restarts if self.backend.backend else 0,
        )

    def summary(
        self,
        end_wall: float,
        job_reading: GroupMemory | None,
        dmesg: bool,
        status: str,
        failure: str | None,
    ) -> dict[str, Any]:
        """summary.json: ``status`` finished | interrupted | failed (with ``failure``)."""
        journal = self.ledger.journal
        quarantine_counts = journal.quarantine_counts()
        counts = {"success": journal.committed_count(), **quarantine_counts}
        return {
            "status": status,
            "failure": failure,
            "function": self.spec["function"],
            "source": self.intake.source.description,
            "items_total": sum(counts.values()),
            "counts": counts,
            "quarantined": sum(quarantine_counts.values()),
            "attempts": journal.attempt_counts(),
            "sessions": len(journal.sessions()),
            **self._recovery(),
            **self._memory(job_reading),
            **self._timing(end_wall),
            "enforcement": self.limiter.kind,
            "enforcement_reason": self.limiter.reason,
            "workers": self.config.workers,
            "batch_size": self.config.batch_size,  # fixed, or the first (adaptive_batch)
            "adaptive_batch": self.config.adaptive_batch,
            "dmesg_excerpt": dmesg,
            "batch_seconds": quantile_dict(self.ledger.metrics, BATCH_SECONDS, 1.0),
            "item_cost_mb": quantile_dict(self.ledger.metrics, ITEM_COST, 1 / 2**20),
            "metrics_bytes": self.ledger.metrics.memory_bytes(),
            "admission": {
                "enabled": self.config.admission,
                "target": self.config.target,
                "pauses": self.admission.pauses,
                "in_flight_limit": self.concurrency.limit,
                "cost_observations": self.admission.observed,
            },
            "backend": self.backend.summary(),
            "events": list(self.ledger.events),
        }

    def _recovery(self) -> dict[str, Any]:
        counters = self.ledger.counters
        return {
            "retries": counters.retries,
            "bisections": counters.bisections,
            "alone_runs": counters.alone_runs,
            "side_lane": {"batches": counters.side_batches, "stalled": counters.side_stalls},
            "bystanders": counters.bystanders,
            "worker_starts": counters.worker_starts,
            "recycled_workers": counters.recycled,
            "malloc_trims": counters.malloc_trims,
            "group_restarts": counters.group_restarts,
        }

    def _memory(self, job_reading: GroupMemory | None) -> dict[str, Any]:
        monitor = self.monitor
        peak_cgroup = monitor.peak_cgroup
        if job_reading is not None and job_reading.peak is not None:
            peak_cgroup = max(peak_cgroup, job_reading.peak)
        working = monitor.peak_working_set
        return {
            "peak_rss_mb": mib(monitor.peak_rss),
            "peak_cgroup_mb": mib(peak_cgroup),
            "peak_working_set_mb": mib(working),
            "peak_working_set_percent_of_cap": round(100 * working / self.memory, 1),
            "memory_figures": MEMORY_FIGURES,
            "peak_gpu_mb": mib(monitor.peak_gpu) if monitor.peak_gpu else None,
            "cap_mb": mib(self.memory),
            "peak_percent_of_cap": round(100 * peak_cgroup / self.memory, 1),
            "samples": monitor.samples,
            "cgroup_events": {
                "oom_kill": self.ledger.counters.oom_kills,
                "job_oom_kill": job_reading.oom_kill if job_reading is not None else None,
                "job_oom_group_kill": job_reading.oom_group_kill if job_reading else None,
            },
        }

    def _timing(self, end_wall: float) -> dict[str, Any]:
        duration = end_wall - self.start_wall
        done = self.ledger.counters.done
        return {
            "duration_sec": round(duration, 3),
            "throughput_items_per_sec": round(done / duration, 2) if duration > 0 else None,
        }
