"""--docker: there is no Docker engine on this machine, so the argv, the parsing of a
recorded ``docker inspect`` and the no-engine error are tested; nothing here is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oomguard.repro.docker import DockerUnavailable, check_engine, docker_run_argv, parse_inspect

# Recorded from `docker inspect` of a container killed under --memory=200m (Docker 28.2).
INSPECT = json.dumps(
    [
        {
            "Id": "4f1c0d3b9a7e5c2d1f0e9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
            "Created": "2026-11-20T10:00:00.000000000Z",
            "State": {
                "Status": "exited",
                "Running": False,
                "OOMKilled": True,
                "Dead": False,
                "Pid": 0,
                "ExitCode": 137,
                "Error": "",
                "StartedAt": "2026-11-20T10:00:00.5Z",
                "FinishedAt": "2026-11-20T10:00:03.1Z",
            },
            "HostConfig": {"Memory": 209715200, "MemorySwap": 209715200, "OomKillDisable": False},
            "Config": {"Image": "python:3.11-slim", "Cmd": ["python", "ingest.py"]},
        }
    ]
)


def test_argv_caps_memory_without_swap_and_mounts_inputs_read_only(tmp_path: Path) -> None:
    data = tmp_path / "doc.pdf"
    data.write_bytes(b"%PDF")
    argv = docker_run_argv(
        "python:3.11-slim",
        ["python", "ingest.py", str(data)],
        200 * 1024**2,
        [data],
        tmp_path / "c.cid",
    )
    assert argv == [
        "docker",
        "run",
        "--memory=209715200",
        "--memory-swap=209715200",
        "--oom-kill-disable=false",
        f"--cidfile={tmp_path / 'c.cid'}",
        "--volume",
        f"{data.resolve()}:{data.resolve()}:ro",
        "python:3.11-slim",
        "python",
        "ingest.py",
        str(data),
    ]


def test_recorded_inspect_is_parsed() -> None:
    facts = parse_inspect(INSPECT)
    assert facts["OOMKilled"] is True and facts["exit_code"] == 137
    assert facts["memory_limit"] == facts["memory_swap_limit"] == 209715200
    assert facts["container_id"].startswith("4f1c0d3b")


def test_no_engine_is_a_clear_error() -> None:
    try:
        check_engine(timeout=20)
    except DockerUnavailable as err:
        assert "Docker" in str(err) or "docker" in str(err)
        assert "\n" not in str(err)
    else:
        pytest.skip("a Docker engine answers here")
