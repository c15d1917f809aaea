"""``oomguard repro --docker IMAGE``: the same run inside ``docker run --memory CAP``.

For users with a Docker engine. Inputs named on the command line are mounted read-only at
the same paths; the container's OOMKilled flag and exit code come from ``docker inspect``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from oomguard.errors import OomguardError
from oomguard.safe_files import open_private


class DockerUnavailable(OomguardError):
    """No Docker engine answers here."""


def docker_run_argv(
    image: str,
    command: list[str],
    memory: int,
    inputs: list[Path],
    cidfile: Path,
    name: str | None = None,
) -> list[str]:
    """The exact ``docker run`` argv: a hard cap, no extra swap, inputs read-only."""
    argv = [
        "docker",
        "run",
        f"--memory={memory}",
        f"--memory-swap={memory}",  # equal to --memory: no swap on top of the cap
        "--oom-kill-disable=false",
        f"--cidfile={cidfile}",
    ]
    if name:
        argv.append(f"--name={name}")
    for path in sorted({p.resolve() for p in inputs}):
        argv += ["--volume", f"{path}:{path}:ro"]
    return [*argv, image, *command]


def parse_inspect(text: str) -> dict[str, Any]:
    """The facts we keep from ``docker inspect CONTAINER`` output."""
    data = json.loads(text)
    entry = data[0] if isinstance(data, list) else data
    state = entry.get("State", {})
    host = entry.get("HostConfig", {})
    return {
        "container_id": entry.get("Id"),
        "image": entry.get("Config", {}).get("Image"),
        "OOMKilled": bool(state.get("OOMKilled")),
        "exit_code": state.get("ExitCode"),
        "started_at": state.get("StartedAt"),
        "finished_at": state.get("FinishedAt"),
        "memory_limit": host.get("Memory"),
        "memory_swap_limit": host.get("MemorySwap"),
    }


def check_engine(timeout: float = 10) -> None:
    """Raise :class:`DockerUnavailable` with the reason unless an engine answers."""
    if shutil.which("docker") is None:
        raise DockerUnavailable("--docker needs the docker command, which is not installed")
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise DockerUnavailable("no Docker engine answered within 10 s") from err
    if result.returncode != 0 or not result.stdout.strip():
        detail = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise DockerUnavailable(f"no Docker engine answers here: {detail}")


def docker_command(argv: list[str], timeout: float | None = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def start_container(
    image: str, command: list[str], memory: int, inputs: list[Path], cidfile: Path
) -> str:
    """``docker run --detach`` with the cap; returns the container id."""
    argv = docker_run_argv(image, command, memory, inputs, cidfile)
    argv.insert(2, "--detach")
    started = docker_command(argv, timeout=600)
    if started.returncode != 0:
        raise DockerUnavailable(f"docker run failed: {started.stderr.strip()[-500:]}")
    return started.stdout.strip()


def container_pid(container: str) -> int | None:
    result = docker_command(["docker", "inspect", "--format", "{{.State.Pid}}", container])
    try:
        pid = int(result.stdout.strip())
    except ValueError:
        return None
    return pid or None


def finish_container(container: str, output_dir: Path) -> dict[str, Any]:
    """Wait for it, keep its output, inspect it, remove it."""
    docker_command(["docker", "wait", container], timeout=None)
    logs = docker_command(["docker", "logs", container], timeout=None)
    for name, text in (("stdout.txt", logs.stdout), ("stderr.txt", logs.stderr)):
        with open_private(output_dir / name) as handle:
            handle.write(text)
    inspected = docker_command(["docker", "inspect", container])
    facts = (
        parse_inspect(inspected.stdout)
        if inspected.returncode == 0
        else {"container_id": container}
    )
    docker_command(["docker", "rm", container])
    return facts
