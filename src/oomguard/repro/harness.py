"""``oomguard repro``: run any command under a memory cap, watch it, keep the evidence.

The command runs in a fresh capped cgroup (the watchdog where cgroups cannot be
written): a launcher waits until it has been moved into the cgroup, then execs the
command, so all of its memory is charged to the cap. A sampler writes memory_log.csv
every ``interval``; at the end come summary.json, dmesg_excerpt.txt, stdout.txt,
stderr.txt and run_manifest_TIMESTAMP.json, the artifacts of the OOM repro toolkit that PDF-ingestion users already run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from oomguard.engine.artifacts import make_run_dir, open_private, write_dmesg_excerpt, write_json
from oomguard.engine.config import MIN_MEMORY
from oomguard.errors import ConfigError
from oomguard.limits.base import GroupMemory, Limiter, MemoryGroup, OomEvent
from oomguard.limits.select_limiter import open_limiter
from oomguard.memory.budget import effective_budget
from oomguard.memory.cgroups import detect_setup, read_cgroup_memory
from oomguard.repro.machine import machine_facts
from oomguard.repro.sampler import Sampler
from oomguard.sizes import format_size, mib

LARGEST_SAFE_SHARE = 0.95  # a cap above this share of the budget could take the host down first
EXIT_OOM = 137


@dataclass
class ReproResult:
    output_dir: Path
    exit_code: int
    oom_killed: bool
    verdict: str
    summary: dict[str, Any]


REAP_SLICE = 0.05  # seconds between looks for the command's end (and its OOM events)


def file_facts(command: list[str]) -> list[dict[str, Any]]:
    """Name, size and sha256 of every existing file named on the command line."""
    facts = []
    for arg in command[1:]:
        for candidate in (arg, arg.partition("=")[2]):
            path = Path(candidate)
            if candidate and path.is_file():
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                facts.append(
                    {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}
                )
                break
    return facts


def own_cgroup_events() -> dict[str, int]:
    setup = detect_setup()
    if setup.memory_dir is None or setup.memory_version is None:
        return {}
    try:
        return dict(read_cgroup_memory(setup.memory_dir, setup.memory_version).events)
    except OSError:
        return {}


def check_cap(memory: int, allow_large_cap: bool) -> int:
    if memory < MIN_MEMORY:
        raise ConfigError(
            f"invalid --memory {format_size(memory)}: below the {format_size(MIN_MEMORY)} the "
            "launcher needs before your command even starts"
        )
    budget = effective_budget().bytes
    if memory > LARGEST_SAFE_SHARE * budget and not allow_large_cap:
        raise ConfigError(
            f"a cap of {format_size(memory)} is more than 95% of the {format_size(budget)} budget: "
            "the machine itself could run out first; use --allow-large-cap to insist"
        )
    return budget


@dataclass
class CappedRun:
    """What the command did in its group."""

    pid: int
    returncode: int
    events: list[OomEvent]
    timed_out: bool
    max_rss: int  # the kernel's peak RSS of the command (ru_maxrss)
    sampler: Sampler
    reading: GroupMemory
    group_events: dict[str, int]
    group_path: str | None


def reproduce(
    command: list[str],
    memory: int,
    *,
    output_dir: Path,
    interval: float = 0.2,
    timeout: float | None = None,
    limiter_mode: str = "auto",
    allow_large_cap: bool = False,
) -> ReproResult:
    if not command:
        raise ConfigError("no command given: oomguard repro --memory 6g -- CMD ARGS...")
    check_cap(memory, allow_large_cap)
    make_run_dir(output_dir)
    inputs = file_facts(command)
    started_wall = time.time()
    before = own_cgroup_events()
    with open_limiter(limiter_mode) as limiter:  # type: ignore[arg-type]
        run = run_capped(command, memory, limiter, output_dir, interval, timeout)
    ended_wall = time.time()
    summary = capped_summary(command, memory, run, interval, started_wall, ended_wall)
    summary["cgroup_events"]["before"] = before
    summary["enforcement"], summary["enforcement_reason"] = limiter.kind, limiter.reason
    manifest = {
        "command": command,
        "inputs": inputs,
        "cap_mb": mib(memory),
        "exit_code": summary["exit_code"],
        "OOMKilled": summary["oom_killed"],
        "started": started_wall,
        "ended": ended_wall,
        "enforcement": limiter.kind,
    }
    return finish(output_dir, summary, manifest, started_wall, ended_wall)


def run_capped(
    command: list[str],
    memory: int,
    limiter: Limiter,
    output_dir: Path,
    interval: float,
    timeout: float | None,
) -> CappedRun:
    """Run ``command`` in a group of its own capped at ``memory``, sampled, until it ends
    (or ``timeout``: then its whole group is killed)."""
    group = limiter.create_group("repro", memory)
    read_fd, write_fd = os.pipe()
    with (
        open_private(output_dir / "stdout.txt") as out,
        open_private(output_dir / "stderr.txt") as err,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-m", "oomguard.repro.launch", str(read_fd), *command],
            pass_fds=(read_fd,),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        os.close(read_fd)
        group.add_pid(proc.pid)
        os.close(write_fd)  # the launcher may exec the command now
        sampler = Sampler(output_dir / "memory_log.csv", proc.pid, group, interval)
        sampler.start_sampling()
        events: list[OomEvent] = []
        timed_out = False
        deadline = time.monotonic() + timeout if timeout else None
        while (ended := reap(proc, block=False)) is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                timed_out = True
                group.kill_all()
                break
            # short slices: the command's end is seen within 50 ms (with 0.5 s, a run's wall
            # time came out in steps of half a second)
            events += marked(
                sampler,
                limiter.events.wait(
                    REAP_SLICE if remaining is None else min(REAP_SLICE, remaining)
                ),
                proc.pid,
            )
        max_rss = ended if ended is not None else reap(proc, block=True) or 0
        events += marked(sampler, limiter.events.drain(), proc.pid)
        sampler.stop()
    assert proc.returncode is not None
    return CappedRun(
        proc.pid,
        proc.returncode,
        events,
        timed_out,
        max_rss,
        sampler,
        group.read(),
        _group_events(group),
        group.path,
    )


def marked(sampler: Sampler, events: list[OomEvent], pid: int) -> list[OomEvent]:
    """Each OOM event gets a row of its own in memory_log.csv."""
    for event in events:
        sampler.mark(f"oom_kill pid={event.pid or pid} count={event.oom_kill}")
    return events


def capped_summary(
    command: list[str],
    memory: int,
    run: CappedRun,
    interval: float,
    started_wall: float,
    ended_wall: float,
) -> dict[str, Any]:
    returncode, sampler = run.returncode, run.sampler
    oom_killed = run.reading.oom_kill > 0 or any(e.pid == run.pid for e in run.events)
    exit_code = returncode if returncode >= 0 else 128 - returncode
    if oom_killed and returncode == -9:
        exit_code = EXIT_OOM
    peak_cgroup = max(sampler.peak_cgroup, run.reading.peak or 0)
    # samples every interval miss an allocation faster than that; the kernel does not
    peak_rss = max(sampler.peak_rss, run.max_rss)
    return {
        "command": command,
        "peak_rss_mb": mib(peak_rss),
        "peak_cgroup_mb": mib(peak_cgroup),
        "peak_working_set_mb": mib(sampler.peak_working_set),
        "cap_mb": mib(memory),
        "peak_percent_of_cap": round(100 * peak_cgroup / memory, 1),
        "duration_sec": round(ended_wall - started_wall, 3),
        "samples": sampler.samples,
        "interval_sec": interval,
        "exit_code": exit_code,
        "signal": -returncode if returncode < 0 else None,
        "oom_killed": oom_killed,
        "timed_out": run.timed_out,
        "cgroup_events": {"after": own_cgroup_events(), "run_group": run.group_events},
        "oom_kill_times": [round(e.time, 3) for e in run.events],
        "cgroup_path": run.group_path,
    }


def finish(
    output_dir: Path,
    summary: dict[str, Any],
    manifest: dict[str, Any],
    started_wall: float,
    ended_wall: float,
) -> ReproResult:
    """Write what a repro leaves (dmesg_excerpt.txt, summary.json, the run manifest) and
    say what happened in one line."""
    summary["dmesg_excerpt"] = write_dmesg_excerpt(
        output_dir / "dmesg_excerpt.txt", started_wall, ended_wall
    )
    write_json(output_dir / "summary.json", summary)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_wall))
    write_json(output_dir / f"run_manifest_{stamp}.json", {**manifest, **machine_facts()})
    verdict = make_verdict(summary, output_dir)
    return ReproResult(output_dir, summary["exit_code"], summary["oom_killed"], verdict, summary)


def reap(proc: subprocess.Popen[bytes], *, block: bool) -> int | None:
    """Reap the command with ``wait4`` (its exit status goes to ``proc``); returns its peak
    RSS in bytes as the kernel counted it (``ru_maxrss``: the command and the children it
    waited for), or None while it runs (``block=False``)."""
    if proc.returncode is not None:
        return 0
    try:
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere: its code is Popen's to find
        proc.wait()
        return 0
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return int(usage.ru_maxrss) * 1024  # KiB on Linux


def _group_events(group: MemoryGroup) -> dict[str, int]:
    path = group.path
    if path is None:
        return {"oom_kill": group.read().oom_kill}
    version: Literal["v1", "v2"] = "v1" if (Path(path) / "memory.oom_control").exists() else "v2"
    return dict(read_cgroup_memory(Path(path), version).events)


def make_verdict(summary: dict[str, Any], output_dir: Path) -> str:
    cap = format_size(summary["cap_mb"] * 2**20)
    peak = format_size(summary["peak_cgroup_mb"] * 2**20)
    rss_mb = summary["peak_rss_mb"]
    rss = format_size(rss_mb * 2**20) if rss_mb is not None else "not sampled"
    took = f"{summary['duration_sec']:.1f} s"
    if summary["oom_killed"]:
        head = f"OOM-killed at {peak} of a {cap} cap after {took}"
    elif summary["timed_out"]:
        head = f"Stopped by the {took} timeout at {peak} of a {cap} cap"
    else:
        head = (
            f"Exited with code {summary['exit_code']} after {took}; peak {peak} of a {cap} cap "
            f"({summary['peak_percent_of_cap']}%)"
        )
    return f"{head}; peak RSS {rss}; artifacts in {output_dir}"
