"""``oomguard repro``: run any command under a memory cap, watch it, keep the evidence.

The command runs in a fresh capped cgroup (the watchdog where cgroups cannot be
written): a launcher waits until it has been moved into the cgroup, then execs the
command, so all of its memory is charged to the cap. A sampler writes memory_log.csv
every ``interval``; at the end come summary.json, dmesg_excerpt.txt, stdout.txt,
stderr.txt and run_manifest_TIMESTAMP.json, the artifacts of the OOM repro toolkit that PDF-ingestion users already run.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from oomguard.engine.artifacts import make_run_dir, open_private, write_dmesg_excerpt, write_json
from oomguard.engine.config import MIN_MEMORY
from oomguard.errors import ConfigError
from oomguard.limits.base import MemoryGroup
from oomguard.limits.select_limiter import open_limiter
from oomguard.memory.budget import effective_budget
from oomguard.memory.cgroups import detect_setup, read_cgroup_memory
from oomguard.memory.gpu import read_gpus
from oomguard.memory.process import read_tree_memory
from oomguard.memory.system import read_pressure, read_system_memory
from oomguard.repro.machine import machine_facts
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


class Sampler:
    """memory_log.csv for one process tree and its cgroup, every ``interval`` seconds."""

    COLUMNS = (
        "time",
        "elapsed_sec",
        "rss_mb",
        "vms_mb",
        "cgroup_mb",
        "mem_available_mb",
        "psi_some_avg10",
        "psi_full_avg10",
        "gpu_used_mb",
        "working_set_mb",  # not in the seed toolkit's columns: after them
        "event",
    )

    def __init__(self, path: Path, pid: int, group: MemoryGroup, interval: float) -> None:
        self.pid = pid
        self.group = group
        self.interval = interval
        self.samples = 0
        self.peak_rss = 0
        self.peak_cgroup = 0
        self.peak_working_set = 0
        self.start = time.time()
        self._file = open_private(path)
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.COLUMNS)
        self._gpu = read_gpus().available
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="oomguard-repro-sampler", daemon=True
        )

    def start_sampling(self) -> None:
        self.sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:
                continue

    def sample(self, event: str = "") -> None:
        now = time.time()
        tree = read_tree_memory(self.pid)
        try:
            reading = self.group.read()
            cgroup, working = reading.usage, reading.working_set
        except OSError:
            cgroup = working = 0
        pressure = read_pressure()
        gpu = read_gpus().used if self._gpu else None
        self.peak_rss = max(self.peak_rss, tree.rss)
        self.peak_cgroup = max(self.peak_cgroup, cgroup)
        self.peak_working_set = max(self.peak_working_set, working)
        self.samples += 1
        with self._lock:
            self._write_row(now, tree, (cgroup, working), pressure, gpu, event)

    def _write_row(
        self,
        now: float,
        tree: Any,
        cgroup: tuple[int, int],
        pressure: Any,
        gpu: int | None,
        event: str,
    ) -> None:
        self._writer.writerow(
            [
                f"{now:.3f}",
                f"{now - self.start:.3f}",
                mib(tree.rss),
                mib(tree.vms),
                mib(cgroup[0]),
                mib(read_system_memory().available),
                pressure.some.avg10 if pressure else "",
                pressure.full.avg10 if pressure and pressure.full else "",
                mib(gpu) if gpu is not None else "",
                mib(cgroup[1]),
                event,
            ]
        )
        self._file.flush()

    def mark(self, event: str) -> None:
        """A row of its own for an event (an OOM kill), sampled the moment it is seen."""
        try:
            self.sample(event)
        except Exception:
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._file.close()


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
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_wall))
    before = own_cgroup_events()
    with open_limiter(limiter_mode) as limiter:  # type: ignore[arg-type]
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
            events = []
            timed_out = False
            deadline = time.monotonic() + timeout if timeout else None
            while (ended := reap(proc, block=False)) is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    group.kill_all()
                    break
                wait = 0.5 if remaining is None else min(0.5, remaining)
                new = limiter.events.wait(wait)
                for event in new:
                    sampler.mark(f"oom_kill pid={event.pid or proc.pid} count={event.oom_kill}")
                events += new
            max_rss = ended if ended is not None else reap(proc, block=True) or 0
            late = limiter.events.drain()
            for event in late:
                sampler.mark(f"oom_kill pid={event.pid or proc.pid} count={event.oom_kill}")
            events += late
            sampler.stop()
        reading = group.read()
        group_events = _group_events(group)
        group_path = group.path
    ended_wall = time.time()
    returncode = proc.returncode
    oom_killed = reading.oom_kill > 0 or any(e.pid == proc.pid for e in events)
    exit_code = returncode if returncode >= 0 else 128 - returncode
    if oom_killed and returncode == -9:
        exit_code = EXIT_OOM
    peak_cgroup = max(sampler.peak_cgroup, reading.peak or 0)
    # samples every interval miss an allocation faster than that; the kernel does not
    peak_rss = max(sampler.peak_rss, max_rss)
    duration = ended_wall - started_wall
    summary: dict[str, Any] = {
        "command": command,
        "peak_rss_mb": mib(peak_rss),
        "peak_cgroup_mb": mib(peak_cgroup),
        "peak_working_set_mb": mib(sampler.peak_working_set),
        "cap_mb": mib(memory),
        "peak_percent_of_cap": round(100 * peak_cgroup / memory, 1),
        "duration_sec": round(duration, 3),
        "samples": sampler.samples,
        "interval_sec": interval,
        "exit_code": exit_code,
        "signal": -returncode if returncode < 0 else None,
        "oom_killed": oom_killed,
        "timed_out": timed_out,
        "cgroup_events": {
            "before": before,
            "after": own_cgroup_events(),
            "run_group": group_events,
        },
        "oom_kill_times": [round(e.time, 3) for e in events],
        "enforcement": limiter.kind,
        "enforcement_reason": limiter.reason,
        "cgroup_path": group_path,
    }
    summary["dmesg_excerpt"] = write_dmesg_excerpt(
        output_dir / "dmesg_excerpt.txt", started_wall, ended_wall
    )
    write_json(output_dir / "summary.json", summary)
    manifest = {
        "command": command,
        "inputs": inputs,
        "cap_mb": mib(memory),
        "exit_code": exit_code,
        "OOMKilled": oom_killed,
        "started": started_wall,
        "ended": ended_wall,
        "enforcement": limiter.kind,
        **machine_facts(),
    }
    write_json(output_dir / f"run_manifest_{stamp}.json", manifest)
    verdict = make_verdict(summary, output_dir)
    return ReproResult(output_dir, exit_code, oom_killed, verdict, summary)


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
    rss = format_size(summary["peak_rss_mb"] * 2**20)
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


class ContainerGroup(MemoryGroup):
    """Reads the memory cgroup of a container's main process (Docker made it, not us)."""

    def __init__(self, pid: int, limit: int) -> None:
        super().__init__("container", limit, None)
        setup = detect_setup(pid)
        self.directory = setup.memory_dir
        self.version = setup.memory_version

    def read(self) -> Any:
        from oomguard.limits.base import GroupMemory

        if self.directory is None or self.version is None:
            return GroupMemory(0, self.limit, None, 0, 0)
        memory = read_cgroup_memory(self.directory, self.version)
        return GroupMemory(
            memory.usage, memory.limit, memory.peak, memory.oom_kill, memory.working_set
        )

    def add_pid(self, pid: int) -> None:
        raise NotImplementedError("Docker places the container's processes")

    def pids(self) -> list[int]:
        return []

    def set_limit(self, limit: int | None) -> None:
        raise NotImplementedError("the container's limit is Docker's")

    def reset_peak(self) -> None:
        pass

    def kill_all(self, timeout: float = 5.0) -> None:
        pass

    def remove(self) -> None:
        self.removed = True


def reproduce_in_docker(
    image: str,
    command: list[str],
    memory: int,
    *,
    output_dir: Path,
    interval: float = 0.2,
    allow_large_cap: bool = False,
) -> ReproResult:
    """The same artifacts, from ``docker run --memory CAP --memory-swap CAP``."""
    from oomguard.repro import docker

    if not command:
        raise ConfigError(
            "no command given: oomguard repro --docker IMAGE --memory 6g -- CMD ARGS..."
        )
    check_cap(memory, allow_large_cap)
    docker.check_engine()
    make_run_dir(output_dir)
    inputs = file_facts(command)
    started_wall = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_wall))
    cidfile = output_dir / "container.cid"
    cidfile.unlink(missing_ok=True)
    container = docker.start_container(
        image, command, memory, [Path(i["path"]) for i in inputs], cidfile
    )
    pid = docker.container_pid(container)
    sampler = None
    if pid is not None:
        sampler = Sampler(output_dir / "memory_log.csv", pid, ContainerGroup(pid, memory), interval)
        sampler.start_sampling()
    facts = docker.finish_container(container, output_dir)
    if sampler is not None:
        sampler.stop()
    ended_wall = time.time()
    oom_killed = bool(facts.get("OOMKilled"))
    exit_code = int(facts.get("exit_code") or 0)
    peak_cgroup = sampler.peak_cgroup if sampler else 0
    summary: dict[str, Any] = {
        "command": command,
        "image": image,
        "container_id": facts.get("container_id"),
        "peak_rss_mb": mib(sampler.peak_rss) if sampler else None,
        "peak_cgroup_mb": mib(peak_cgroup),
        "cap_mb": mib(memory),
        "peak_percent_of_cap": round(100 * peak_cgroup / memory, 1),
        "duration_sec": round(ended_wall - started_wall, 3),
        "samples": sampler.samples if sampler else 0,
        "interval_sec": interval,
        "exit_code": exit_code,
        "signal": None,
        "oom_killed": oom_killed,
        "timed_out": False,
        "cgroup_events": {},
        "oom_kill_times": [round(ended_wall, 3)] if oom_killed else [],
        "enforcement": "docker",
        "docker": facts,
    }
    summary["dmesg_excerpt"] = write_dmesg_excerpt(
        output_dir / "dmesg_excerpt.txt", started_wall, ended_wall
    )
    write_json(output_dir / "summary.json", summary)
    write_json(
        output_dir / f"run_manifest_{stamp}.json",
        {
            "command": command,
            "inputs": inputs,
            "cap_mb": mib(memory),
            "exit_code": exit_code,
            "OOMKilled": oom_killed,
            "image": image,
            "container_id": facts.get("container_id"),
            "docker_argv": docker.docker_run_argv(
                image, command, memory, [Path(i["path"]) for i in inputs], cidfile
            ),
            **machine_facts(),
        },
    )
    return ReproResult(
        output_dir, exit_code, oom_killed, make_verdict(summary, output_dir), summary
    )
