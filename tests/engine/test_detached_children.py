"""Nothing an item starts outlives its worker, not even a child that detaches itself
(``setsid`` and a double fork, as a library's background server does): real processes,
under the watchdog, where no cgroup holds them."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from oomguard.engine import Job
from tests.engine.conftest import WORK, write_jsonl


def survivors(pidfiles: list[Path]) -> list[int]:
    """The daemons still running a moment after the run (each killed one is waited for)."""
    alive = []
    for pidfile in pidfiles:
        if not pidfile.exists():
            continue
        try:
            daemon = psutil.Process(int(pidfile.read_text()))
            daemon.wait(timeout=10)
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            alive.append(daemon.pid)
            daemon.kill()  # not left behind by a failing test
    return alive


@pytest.mark.parametrize("then", ["return", "exit"])
def test_a_detached_child_dies_with_its_worker(tmp_path: Path, then: str) -> None:
    pidfiles = [tmp_path / f"daemon-{i}.pid" for i in range(3)]
    items = [{"kind": "daemon", "pidfile": str(p), "then": then} for p in pidfiles]
    source = write_jsonl(tmp_path / "items.jsonl", [*items, {"kind": "ok", "value": 1}])
    try:
        result = Job(
            WORK,
            source=source,
            sink=tmp_path / "out.jsonl",
            run_dir=tmp_path / "run",
            limiter="watchdog",
            workers=2,
            crash_retries=0,
            log_format="quiet",
        ).run()
    finally:
        alive = survivors(pidfiles)
    assert alive == []
    if then == "return":  # each item finished; its worker, at the run's end, took them along
        assert result.succeeded == 4
    else:  # each worker died in its item (os._exit): whoever adopts its children kills them
        assert sorted(q["status"] for q in result.quarantined) == ["worker_crash"] * 3
