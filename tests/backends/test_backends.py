"""Supervised model backends, for real: a real HTTP server on 127.0.0.1, killed by the
kernel in its capped cgroup, restarted by oomguard while the job goes on."""

from __future__ import annotations

import collections
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from oomguard import BackendConfig, ConfigError, Job, RunResult
from oomguard.backends.errors import means_backend_failure
from oomguard.engine.pressure_level import assess
from oomguard.errors import BackendFailed
from oomguard.journal import Journal
from oomguard.limits import CgroupLimiter
from oomguard.memory.gpu import GpuMemory, GpuReport
from oomguard.memory.system import SystemMemory
from tests.engine.conftest import manifest

ROOT = Path(__file__).parents[2]
SERVER = str(ROOT / "examples" / "model_server" / "server.py")
CLIENT = "examples.model_server.client:chat"
GiB = 1024**3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def requests_file(path: Path, url: str, count: int) -> Path:
    with open(path, "w") as handle:
        for number in range(count):
            messages = [{"role": "user", "content": f"q{number}-{part}"} for part in range(3)]
            handle.write(
                json.dumps({"id": number, "url": f"{url}/api/chat", "messages": messages}) + "\n"
            )
    return path


def backend(port: int, *extra: str, **options: object) -> BackendConfig:
    options.setdefault("backoff_initial", 0.05)
    options.setdefault("backoff_max", 0.5)
    options.setdefault("health_interval", 0.2)
    return BackendConfig(
        command=[sys.executable, SERVER, "--port", str(port), *extra],
        health_url=f"http://127.0.0.1:{port}/health",
        **options,  # type: ignore[arg-type]
    )


def answered(path: Path) -> collections.Counter[int]:
    return collections.Counter(
        json.loads(line)["result"]["id"] for line in path.read_text().splitlines()
    )


def answer_all(
    tmp_path: Path, port: int, count: int, config: BackendConfig, **options: Any
) -> RunResult:
    """Run ``count`` chat requests against the backend; every one answered exactly once."""
    source = requests_file(tmp_path / "requests.jsonl", f"http://127.0.0.1:{port}", count)
    result = Job(
        CLIENT,
        source=source,
        sink=tmp_path / "answers.jsonl",
        run_dir=tmp_path / "run",
        workers=2,
        log_format="quiet",
        backend=config,
        **options,
    ).run()
    counts = answered(tmp_path / "answers.jsonl")
    assert set(counts) == set(range(count)) and set(counts.values()) == {1}
    return result


def test_server_oom_killed_mid_run_and_every_request_answered_once(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    port = free_port()
    config = backend(port, "--leak-mb", "2", memory="120m", max_restarts=50)
    result = answer_all(tmp_path, port, 150, config)  # about 50 a life: three kills
    assert result.quarantined == []
    summary = result.summary
    assert summary["backend"]["oom_kills"] >= 2, "the kernel never killed the server"
    assert summary["backend"]["restarts"] >= summary["backend"]["oom_kills"]
    events = [e["event"] for e in summary["events"]]
    assert "backend_oom_killed" in events and "degrade" in events
    failed = [a for a in manifest(tmp_path / "run") if a["status"] == "backend_failure"]
    assert failed, "in-flight requests were requeued as backend_failure"


def test_a_failing_health_check_restarts_the_backend(tmp_path: Path) -> None:
    port = free_port()
    config = backend(port, "--unhealthy-after", "40", unhealthy_after=2)
    result = answer_all(tmp_path, port, 120, config, limiter="watchdog")
    events = [e["event"] for e in result.summary["events"]]
    assert "backend_unhealthy" in events and "backend_restart" in events
    assert result.summary["backend"]["restarts"] >= 1


def test_restart_budget_exhausted_fails_clearly_and_the_run_resumes(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    port = free_port()
    count = 80  # about 20 a life: the first run dies at its second kill, short of them all
    source = requests_file(tmp_path / "requests.jsonl", f"http://127.0.0.1:{port}", count)
    args = dict(
        source=source,
        sink=tmp_path / "answers.jsonl",
        run_dir=tmp_path / "run",
        workers=2,
        log_format="quiet",
        commit_interval=0.02,
    )
    with pytest.raises(BackendFailed, match=r"more than 1 times.*journal intact"):
        Job(
            CLIENT, **args, backend=backend(port, "--leak-mb", "4", memory="100m", max_restarts=1)
        ).run()  # type: ignore[arg-type]
    journal = Journal.open(tmp_path / "run")
    done = len(journal.committed_set())
    journal.close()
    assert 0 < done < count
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
    # fixed: a bigger budget of restarts; the same run directory carries on
    result = Job(
        CLIENT, **args, backend=backend(port, "--leak-mb", "4", memory="100m", max_restarts=100)
    ).run()  # type: ignore[arg-type]
    counts = answered(tmp_path / "answers.jsonl")
    assert set(counts) == set(range(count)) and set(counts.values()) == {1}
    assert result.summary["sessions"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<urlopen error [Errno 111] Connection refused>", True),
        ("[Errno 104] Connection reset by peer", True),
        ("Remote end closed connection without response", True),
        ("IncompleteRead(0 bytes read, 129 more expected)", True),
        ("HTTP Error 500: CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("HTTP 503 Service Unavailable: model is loading", True),
        ("HTTP Error 500: internal error in tokenizer", False),
        ("KeyError: 'messages'", False),
    ],
)
def test_the_error_text_table(text: str, expected: bool) -> None:
    assert means_backend_failure(text) is expected


def test_backend_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="never a shell string"):
        BackendConfig(command="ollama serve", health_url="http://127.0.0.1:1/health").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="health check"):
        BackendConfig(command=["ollama", "serve"]).validate()
    with pytest.raises(ConfigError, match="http"):
        BackendConfig(command=["x"], health_url="127.0.0.1:1").validate()
    with pytest.raises(ConfigError, match="restart_hook"):
        BackendConfig(health_url="http://127.0.0.1:1/health").validate()
    assert BackendConfig(command=["x"], health_url="http://h/health", memory="2g").memory == 2 * GiB


def test_pressure_levels() -> None:
    plenty = SystemMemory(total=16 * GiB, available=12 * GiB, swap_total=0, swap_free=0)
    low = SystemMemory(total=16 * GiB, available=1 * GiB, swap_total=0, swap_free=0)
    no_gpu = GpuReport(False, reason="NVML unavailable")  # no NVML here: the normal state
    assert assess(plenty, no_gpu).level == "normal"
    assert assess(low, no_gpu).level == "elevated"
    card = GpuReport(
        True, "550", (GpuMemory(0, "A4000", "GPU-1", 16 * GiB, 14 * GiB + 1, 2 * GiB),)
    )
    pressure = assess(plenty, card)
    assert pressure.level == "elevated" and "GPU 0" in pressure.reason
    assert assess(plenty, no_gpu, backend_oom_recently=True).level == "elevated"


def test_a_backend_started_elsewhere_is_restarted_by_its_hook(tmp_path: Path) -> None:
    import signal
    import subprocess

    import psutil

    port = free_port()
    pidfile = tmp_path / "server.pid"
    hook = [
        sys.executable,
        str(ROOT / "tests" / "backends" / "restart_hook.py"),
        str(port),
        str(pidfile),
        "--unhealthy-after",
        "40",
    ]
    subprocess.run(hook, check=True)  # "systemctl start": the server runs before oomguard does
    first_pid = int(pidfile.read_text())
    try:
        config = BackendConfig(
            restart_hook=hook,
            health_url=f"http://127.0.0.1:{port}/health",
            health_interval=0.2,
            unhealthy_after=2,
            backoff_initial=0.05,
            backoff_max=0.5,
        )
        result = answer_all(tmp_path, port, 150, config, limiter="watchdog")
        assert result.summary["backend"]["restarts"] >= 1
        assert int(pidfile.read_text()) != first_pid
        assert "backend_restart_hook" in [e["event"] for e in result.summary["events"]]
    finally:
        try:  # the last server the hook started (it may be gone already)
            server = psutil.Process(int(pidfile.read_text()))
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
