"""``oomguard repro --docker IMAGE``: the same artifacts, from ``docker run --memory CAP``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from oomguard.engine.artifacts import make_run_dir
from oomguard.errors import ConfigError
from oomguard.limits.base import GroupMemory, MemoryGroup
from oomguard.memory.cgroups import detect_setup, read_cgroup_memory
from oomguard.repro import docker
from oomguard.repro.harness import ReproResult, check_cap, file_facts, finish
from oomguard.repro.sampler import Sampler
from oomguard.sizes import mib


class ContainerGroup(MemoryGroup):
    """Reads the memory cgroup of a container's main process (Docker made it, not us)."""

    def __init__(self, pid: int, limit: int) -> None:
        super().__init__("container", limit, None)
        setup = detect_setup(pid)
        self.directory = setup.memory_dir
        self.version = setup.memory_version

    def read(self) -> GroupMemory:
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
    if not command:
        raise ConfigError(
            "no command given: oomguard repro --docker IMAGE --memory 6g -- CMD ARGS..."
        )
    check_cap(memory, allow_large_cap)
    docker.check_engine()
    make_run_dir(output_dir)
    inputs = file_facts(command)
    started_wall = time.time()
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
    summary = docker_summary(command, image, memory, facts, sampler, interval)
    summary["duration_sec"] = round(ended_wall - started_wall, 3)
    summary["oom_kill_times"] = [round(ended_wall, 3)] if summary["oom_killed"] else []
    oom_killed, exit_code = summary["oom_killed"], summary["exit_code"]
    manifest = {
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
    }
    return finish(output_dir, summary, manifest, started_wall, ended_wall)


def docker_summary(
    command: list[str],
    image: str,
    memory: int,
    facts: dict[str, Any],
    sampler: Sampler | None,
    interval: float,
) -> dict[str, Any]:
    """summary.json's fields from what Docker said and what was sampled (a container whose
    pid could not be found was not sampled)."""
    oom_killed = bool(facts.get("OOMKilled"))
    peak_cgroup = sampler.peak_cgroup if sampler else 0
    return {
        "command": command,
        "image": image,
        "container_id": facts.get("container_id"),
        "peak_rss_mb": mib(sampler.peak_rss) if sampler else None,
        "peak_cgroup_mb": mib(peak_cgroup),
        "cap_mb": mib(memory),
        "peak_percent_of_cap": round(100 * peak_cgroup / memory, 1),
        "samples": sampler.samples if sampler else 0,
        "interval_sec": interval,
        "exit_code": int(facts.get("exit_code") or 0),
        "signal": None,
        "oom_killed": oom_killed,
        "timed_out": False,
        "cgroup_events": {},
        "enforcement": "docker",
        "docker": facts,
    }
