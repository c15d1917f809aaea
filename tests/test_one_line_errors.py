"""Every user mistake gets one line naming the value and what was expected, exit code 2,
no traceback: as a user types the commands, with real files, sockets and file systems."""

from __future__ import annotations

import collections
import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import ROOT, cli_env, oomguard_argv, run_cli
from tests.helpers.mounts import remount, tmpfs

OK = [{"kind": "ok", "value": i} for i in range(3)]


def one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("oomguard: error:"), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def run(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", WORK, *map(str, args), "--log-format", "quiet", "-w", "1")


def test_configuration_values_of_the_wrong_type(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    cases = {
        "workers = 2.5": "invalid workers 2.5",
        'metrics_port = "abc"': "invalid metrics_port 'abc'",
        'backend = "ollama"': "invalid backend 'ollama'",
        'batched = "yes"': "invalid batched 'yes': expected true or false",
        "ordered = 1": "invalid ordered 1",
        "commit_interval = -1": "invalid commit_interval -1",
    }
    for number, (line, message) in enumerate(cases.items()):
        config = tmp_path / f"c{number}.toml"
        config.write_text(line + "\n")
        result = run_cli(  # no -w: the file's own value is the one judged
            "run", WORK, "-i", str(source), "--config", str(config),
            "--run-dir", str(tmp_path / f"r{number}"), "--log-format", "quiet",
        )  # fmt: skip
        one_line(result, message)


def test_sizes_below_what_can_run(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    for tiny in ("1b", "1k"):
        refused = run(tmp_path, "-i", source, "--memory", tiny, "--run-dir", tmp_path / tiny)
        one_line(refused, "below the 32.0 MiB")


def test_inputs_that_cannot_be_read(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pyarrow.table({"value": list(range(1000))})
    whole = tmp_path / "whole.parquet"
    pq.write_table(table, whole)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    one_line(run(tmp_path, "-i", truncated, "--run-dir", tmp_path / "r1"), "not a readable Parquet")
    locked = write_jsonl(tmp_path / "locked.jsonl", OK)
    locked.chmod(0)
    # without the capability that lets root read any file: what a user without it meets
    as_user = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
         *oomguard_argv("run", WORK, "-i", str(locked), "--run-dir", str(tmp_path / "r2"))],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=120, check=False,
    )  # fmt: skip
    if "setpriv" in as_user.stderr and as_user.returncode != 2:
        pytest.skip(f"setpriv cannot drop capabilities here: {as_user.stderr.strip()}")
    one_line(as_user, "cannot be read", "Permission denied")


def test_a_run_directory_that_cannot_be_made(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    with tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        one_line(
            run(tmp_path, "-i", source, "--run-dir", read_only / "run"),
            "cannot create the run directory",
            "Read-only file system",
        )


def test_metrics_endpoints_that_cannot_be(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line(
            run(tmp_path, "-i", source, "--metrics-port", str(port), "--run-dir", tmp_path / "a"),
            f"cannot serve metrics on 127.0.0.1:{port}",
        )
    bogus = ("--metrics-port", "0", "--metrics-addr", "no such host!", "--run-dir", tmp_path / "b")
    one_line(run(tmp_path, "-i", source, *bogus), "invalid metrics_addr 'no such host!'")


def test_a_public_metrics_address_is_warned_about(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    result = run(
        tmp_path, "-i", source, "-o", tmp_path / "o.jsonl", "--run-dir", tmp_path / "run",
        "--metrics-port", "0", "--metrics-addr", "0.0.0.0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("oomguard: warning: metrics on 0.0.0.0:0"), result.stderr
    assert "no authentication" in result.stderr


def test_a_garbage_journal(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / "journal.sqlite").write_bytes(b"not a database, " * 512)
    for args in (("status", str(run_dir)), ("resume", str(run_dir))):
        one_line(run_cli(*args), "is not an oomguard journal")
    one_line(run(tmp_path, "-i", source, "--run-dir", run_dir), "is not an oomguard journal")


def test_a_full_disk_says_what_to_do_and_the_resume_is_exact(tmp_path: Path) -> None:
    pad = "x" * 400
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"kind": "pad", "value": i, "pad": pad} for i in range(4000)]
    )
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        run_dir = disk / "run"
        full = run(
            tmp_path, "-i", source, "-o", disk / "out.jsonl", "--run-dir", run_dir,
            "--batch-size", "50",
        )  # fmt: skip
        one_line(full, str(disk), f"free space and run `oomguard resume {run_dir}`")
        remount(disk, "size=16m")
        resumed = run_cli("resume", str(run_dir), "--log-format", "quiet")
        assert resumed.returncode == 0, resumed.stderr
        lines = (disk / "out.jsonl").read_text().splitlines()
        counts = collections.Counter(json.loads(line)["input_index"] for line in lines)
        assert counts == {i: 1 for i in range(4000)}


def test_the_python_api_refuses_the_same_values() -> None:
    from oomguard import ConfigError, Job

    for option, value in (("batched", "yes"), ("workers", 2.5), ("commit_interval", -0.5)):
        with pytest.raises(ConfigError, match=option):
            Job(WORK, source=[1], **{option: value})
