"""The fork server outlives its run: kept idle for the next job of this process, for real
(real servers, real workers, real process table)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from oomguard.engine import fork_server
from oomguard.engine.fork_server import ForkServer, boot, close_idle, idle_pid, release

WHOAMI = [{"kind": "whoami"} for _ in range(2)]


@pytest.fixture(autouse=True)
def no_idle_server() -> Iterator[None]:
    close_idle()  # each test starts with no server kept
    yield
    close_idle()


def server_of(lines: list[dict]) -> int:
    parents = {line["result"]["ppid"] for line in lines}
    assert len(parents) == 1
    return parents.pop()


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited: waited for (bounded), not slept on."""
    try:
        psutil.Process(pid).wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_next_job_forks_its_workers_from_the_server_the_last_one_left(run_job) -> None:
    _, first = run_job(WHOAMI, name="first")
    kept = idle_pid()
    assert kept == server_of(first)  # kept, idle, after the run
    assert "oomguard.engine.fork_server_main" in psutil.Process(kept).cmdline()
    _, second = run_job(WHOAMI, name="second")
    assert server_of(second) == kept
    assert idle_pid() == kept


def test_a_job_in_another_environment_or_directory_starts_its_own(
    run_job, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, first = run_job(WHOAMI, name="first")
    old = server_of(first)
    monkeypatch.setenv("OOMGUARD_TEST_MARK", "1")  # workers would inherit a stale environment
    _, second = run_job(WHOAMI, name="second")
    assert server_of(second) != old and gone(old)
    newer = server_of(second)
    monkeypatch.chdir(tmp_path)  # ... or a stale working directory
    _, third = run_job(WHOAMI, name="third")
    assert server_of(third) != newer and gone(newer)
    _, fourth = run_job(WHOAMI, name="fourth", malloc_arena_max=1)  # its own allocator settings
    assert server_of(fourth) != server_of(third)


def test_an_idle_server_is_closed_after_its_time(run_job, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork_server, "IDLE_SECONDS", 0.0)
    _, lines = run_job(WHOAMI)
    assert gone(server_of(lines))
    assert idle_pid() is None


def test_a_server_with_a_worker_unaccounted_for_is_not_kept() -> None:
    server = boot({})
    assert isinstance(server, ForkServer)
    server.wait_ready()
    ours, theirs = socket.socketpair()
    slot = os.memfd_create("slot")
    os.ftruncate(slot, 16)
    try:
        worker = server.spawn(theirs.fileno(), slot)
    finally:
        theirs.close()
        os.close(slot)
    release(
        server
    )  # its worker's exit is yet to be collected: a next run could take it for its own
    assert idle_pid() is None
    assert gone(server.pid)
    ours.close()  # the worker, waiting for its init, sees the end and exits
    assert gone(worker)


def test_a_forked_child_never_uses_the_parents_idle_server(run_job) -> None:
    run_job(WHOAMI, name="first")
    kept = idle_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: reports what it sees, and exits at once
        os.close(read)
        os.write(write, str(idle_pid()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as seen:
        assert seen.read() == "None"
    assert os.waitpid(child, 0)[1] == 0
    _, second = run_job(WHOAMI, name="second")  # the child's exit did not end the server
    assert server_of(second) == kept


def test_no_server_outlives_the_process_that_ran_jobs(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from oomguard import Job\n"
        "from oomguard.engine.fork_server import idle_pid\n"
        f"Job('tests.engine.workloads:work', source=[{{'kind': 'ok', 'value': 1}}],"
        f" sink={str(tmp_path / 'out.jsonl')!r}, run_dir={str(tmp_path / 'run')!r},"
        " log_format='quiet').run()\n"
        "print(idle_pid())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    kept = int(done.stdout.split()[-1])
    assert gone(kept)
