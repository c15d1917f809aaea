"""SIGTERM stops a run as Ctrl-C does; a supervisor killed by SIGKILL takes its workers
along. End to end: the real command, a worker inside a long item, the real process table
and cgroups."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
from pathlib import Path

import psutil

from oomguard.journal import Journal
from oomguard.limits import CgroupLimiter
from oomguard.limits.cgroup import GROUP_PREFIX
from oomguard.memory.cgroups import detect_setup
from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import cli_env, oomguard_argv, run_cli
from tests.helpers.gates import Gate


def start_run(tmp_path: Path, gate: Gate) -> subprocess.Popen[str]:
    items = [*({"kind": "ok", "value": i} for i in range(20)), gate.item()]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    return subprocess.Popen(
        oomguard_argv(
            "run", WORK, "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
            "--run-dir", str(tmp_path / "run"), "-w", "2", "--batch-size", "1",
            "--log-format", "quiet",
        ),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def our_cgroups(pid: int) -> list[str]:
    setup = detect_setup()
    if setup.memory_dir is None:
        return []
    return [
        p.name for p in setup.memory_dir.iterdir() if p.name.startswith(f"{GROUP_PREFIX}{pid}-")
    ]


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` alive after a short bounded wait (a moment to die)."""
    _, alive = psutil.wait_procs(processes, timeout=10)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def resume_is_exact(tmp_path: Path) -> None:
    resumed = run_cli("resume", str(tmp_path / "run"), "--log-format", "quiet")
    assert resumed.returncode == 0, resumed.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    counts = collections.Counter(json.loads(line)["input_index"] for line in lines)
    assert counts == {i: 1 for i in range(21)}


def test_sigterm_stops_the_run_cleanly_and_it_resumes_exactly(tmp_path: Path) -> None:
    gate = Gate(tmp_path, once=True)
    proc = start_run(tmp_path, gate)
    try:
        worker = gate.wait_running(proc)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert worker in [p.pid for p in descendants]
        proc.send_signal(signal.SIGTERM)  # what systemd, docker stop and Kubernetes send
        assert proc.wait(timeout=60) == 143
        assert proc.stderr is not None
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert stderr.count("\n") == 1 and "stopped by SIGTERM" in stderr, stderr
    assert "oomguard resume" in stderr and "Traceback" not in stderr
    assert still_running(descendants) == []  # the worker inside its item is gone too
    assert our_cgroups(proc.pid) == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    journal = Journal(tmp_path / "run" / "journal.sqlite", read_only=True)
    try:
        assert journal.sessions()[-1]["status"] == "interrupted"
    finally:
        journal.close()
    resume_is_exact(tmp_path)


def test_workers_do_not_outlive_a_supervisor_killed_by_sigkill(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    gate = Gate(tmp_path, once=True)
    proc = start_run(tmp_path, gate)
    descendants: list[psutil.Process] = []
    try:
        gate.wait_running(proc)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()  # the supervisor alone, as the kernel's OOM killer or a kill -9 would
        proc.wait(timeout=60)
        alive = still_running(descendants)
        assert alive == [], [(p.pid, p.cmdline()) for p in alive]
    finally:
        for orphan in descendants:  # whatever survived (a failure): not left behind
            try:
                orphan.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert our_cgroups(proc.pid) != []  # nobody removed its cgroups: the next start does
    resume_is_exact(tmp_path)
    assert our_cgroups(proc.pid) == []
