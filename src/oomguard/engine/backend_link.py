"""The engine's side of a supervised model backend, and the pressure level sent to workers.

With a backend (:mod:`oomguard.backends`): start it before any work, follow its state
changes (each of its events becomes one of the run's), degrade after it runs out of memory
(fewer batches in flight and smaller batches sent to it, grown back by AIMD), tell which
worker errors are the backend's (requeued uncounted, never quarantined) and stop the run
when it cannot be kept alive. With or without one: the pressure level (system RAM, GPU
memory, a recent backend OOM) every batch carries to user code (``worker_context()``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from oomguard.backends.errors import means_backend_failure
from oomguard.backends.supervisor import BackendSupervisor
from oomguard.engine.aimd import Aimd
from oomguard.engine.ledger import Ledger
from oomguard.engine.pressure_level import PressureThresholds, assess
from oomguard.errors import BackendFailed
from oomguard.limits.base import Limiter
from oomguard.memory.gpu import read_gpus
from oomguard.memory.system import read_system_memory


class BackendLink:
    def __init__(
        self,
        config: Any,
        limiter: Limiter,
        run_dir: Path,
        ledger: Ledger,
        *,
        concurrency: Aimd,
        batch_limit: Aimd,
        thresholds: PressureThresholds | None = None,
    ) -> None:
        """``config``: the job's BackendConfig, or None for a job without a backend."""
        self.config = config
        self.limiter = limiter
        self.run_dir = run_dir
        self.ledger = ledger
        self.concurrency = concurrency
        self.batch_limit = batch_limit
        self.thresholds = thresholds or PressureThresholds()
        self.backend: BackendSupervisor | None = None
        self._oom_at = 0.0
        self._next_event = 0  # the number of the next backend event to take
        self._level: tuple[str, str] = ("normal", "")
        self._level_checked = 0.0

    def start(self) -> BackendSupervisor | None:
        """Start the backend and wait until it is healthy: no work before it answers."""
        if self.config is None:
            return None
        self.backend = BackendSupervisor(self.config, self.limiter, self.run_dir)
        self.backend.start()
        self.ledger.event("backend_ready")
        return self.backend

    @property
    def ready(self) -> bool:
        """False while the backend restarts (dispatch pauses)."""
        return self.backend is None or self.backend.ready

    def handle_change(self) -> None:
        """The backend's state changed: its new events become the run's; after an OOM of
        the backend, fewer in flight and smaller batches; a failed backend stops the run."""
        backend = self.backend
        assert backend is not None
        backend.drain()
        events, self._next_event = backend.events_since(self._next_event)
        for event in events:
            self.ledger.add_event(event)
            if event["event"] == "backend_oom_killed":
                self._oom_at = time.monotonic()
                self.concurrency.decrease()
                self.batch_limit.decrease()
                self.ledger.event(
                    "degrade",
                    in_flight_limit=self.concurrency.limit,
                    batch_size=self.batch_limit.limit,
                )
        if backend.state == "failed":
            raise BackendFailed(backend.failure or "the backend failed")

    def is_failure(self, error: dict[str, Any] | None) -> bool:
        """Whether a worker's error is the backend's doing (gone, or out of memory)."""
        if self.backend is None or not error:
            return False
        # the backend's own texts only: a worker's own MemoryError is the item's
        return means_backend_failure(f"{error.get('type', '')}: {error.get('message', '')}")

    def failed(self, items: int, error: dict[str, Any]) -> None:
        """``items`` were requeued because the backend failed them: counted, and told to
        the backend (it checks its health at once)."""
        assert self.backend is not None
        self.ledger.counters.backend_failures += items
        self.backend.report_failure(str(error.get("message", "")))

    def success(self) -> None:
        """A batch went through: the batch-size limit grows back a step (AIMD)."""
        if self.backend is not None:
            self.batch_limit.success()

    def pressure_level(self) -> tuple[str, str]:
        """``(level, reason)`` for the next batch, read at most every
        ``thresholds.recheck_seconds``."""
        now = time.monotonic()
        if now - self._level_checked >= self.thresholds.recheck_seconds:
            self._level_checked = now
            recent = self._oom_at > 0 and now - self._oom_at < self.thresholds.backend_oom_seconds
            pressure = assess(
                read_system_memory(),
                read_gpus(),
                backend_oom_recently=recent,
                thresholds=self.thresholds,
            )
            self._level = (pressure.level, pressure.reason)
        return self._level

    def close(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                pass

    def summary(self) -> dict[str, Any] | None:
        if self.backend is None:
            return None
        return {
            "restarts": self.backend.restarts,
            "oom_kills": self.backend.oom_kills,
            "failed_requests_requeued": self.ledger.counters.backend_failures,
            "failure": self.backend.failure,
        }
