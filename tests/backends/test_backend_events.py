"""The engine hears every backend event, however long the run; and a worker's own
MemoryError is the item's, not the backend's. Real backends, a real supervisor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oomguard import BackendConfig, Job
from oomguard.backends import supervisor as backends
from oomguard.backends.supervisor import BackendSupervisor
from oomguard.engine.aimd import Aimd
from oomguard.engine.backend_link import BackendLink
from oomguard.engine.ledger import Ledger
from oomguard.engine.sinks import CallableSink
from oomguard.journal import Journal, RangeSet
from oomguard.limits import WatchdogLimiter
from tests.backends.test_backends import SERVER, free_port
from tests.engine.conftest import WORK, write_jsonl


def test_events_are_numbered_and_survive_a_full_history(tmp_path: Path) -> None:
    kept = backends.EVENTS_KEPT
    config = BackendConfig(command=["unused"], health_url="http://127.0.0.1:1/health")
    limiter = WatchdogLimiter()
    backend = BackendSupervisor(config, limiter, tmp_path)  # never started: events only
    got: list[object] = []
    seq = 0
    for _ in range(4):  # 1,200 events, read 300 at a time: past the 500 the backend keeps
        for _ in range(300):
            backend.report_failure(f"failure {backend.events_since(0)[1]}")
        events, seq = backend.events_since(seq)
        got += [event["detail"] for event in events]
    assert got == [f"failure {number}" for number in range(1200)]
    assert backend.events_since(seq) == ([], seq)
    # a reader further behind than the history gets what is kept, and goes on from there
    for number in range(2 * kept):
        backend.report_failure(f"late {number}")
    events, seq = backend.events_since(seq)
    assert len(events) == kept and events[-1]["detail"] == f"late {2 * kept - 1}"
    limiter.close()


def test_the_engine_takes_every_backend_event_past_the_history_length(
    tmp_path: Path,
) -> None:
    limiter = WatchdogLimiter()
    journal = Journal.open(tmp_path)
    ledger = Ledger(
        journal, CallableSink(lambda pairs: None), tmp_path, ordered=False, done=RangeSet()
    )
    link = BackendLink(
        BackendConfig(command=["unused"], health_url="http://127.0.0.1:1/health"),
        limiter,
        tmp_path,
        ledger,
        concurrency=Aimd(ceiling=2),
        batch_limit=Aimd(ceiling=10),
    )
    assert link.config is not None
    link.backend = BackendSupervisor(link.config, limiter, tmp_path)  # never started
    try:
        for burst in range(3):  # 300 each: the backend keeps the last 500 only
            for number in range(300):
                link.backend.report_failure(f"{burst}-{number}")
            link.handle_change()
        ledger.maybe_checkpoint(0.0, final=True)
        seen = [e for e in journal.events() if e["event"] == "backend_reported"]
        assert len(seen) == 900
        assert seen[-1]["detail"] == "2-299"
    finally:
        ledger.close()
        journal.close()
        limiter.close()


@pytest.mark.timeout(120)
def test_a_workers_own_memory_error_is_the_items_not_the_backends(tmp_path: Path) -> None:
    port = free_port()
    backend = BackendConfig(
        command=[sys.executable, SERVER, "--port", str(port)],
        health_url=f"http://127.0.0.1:{port}/health",
        max_restarts=1,
        backoff_initial=0.05,
    )
    items = [{"kind": "ok", "value": 1}, {"kind": "memerr"}, {"kind": "ok", "value": 2}]
    result = Job(
        WORK,
        source=write_jsonl(tmp_path / "items.jsonl", items),
        sink=tmp_path / "out.jsonl",
        run_dir=tmp_path / "run",
        workers=1,
        limiter="watchdog",
        log_format="quiet",
        backend=backend,
    ).run()
    assert result.succeeded == 2
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(1, "memory_error")]
    assert result.summary["backend"]["failed_requests_requeued"] == 0
    assert result.summary["backend"]["restarts"] == 0
