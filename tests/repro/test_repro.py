"""``oomguard repro``, for real: real children, real caps, real kernel OOM kills."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from oomguard.errors import ConfigError
from oomguard.limits import CgroupLimiter
from oomguard.repro import reproduce
from tests.helpers.cli import run_cli

MiB = 1024**2
GREEDY = "x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))\n"
MODEST = "import sys\nx = bytearray(30 * 1024 * 1024)\nprint('done', len(x))\nprint('to stderr', file=sys.stderr)\n"


def check_artifacts(directory: Path) -> dict:  # type: ignore[type-arg]
    summary = json.loads((directory / "summary.json").read_text())
    for name in ("memory_log.csv", "summary.json", "stdout.txt", "stderr.txt"):
        assert (directory / name).exists(), name
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    manifests = list(directory.glob("run_manifest_*.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    for key in (
        "command",
        "inputs",
        "cap_mb",
        "exit_code",
        "OOMKilled",
        "host_os",
        "kernel",
        "cpu",
        "ram_mb",
        "cgroup_layout",
        "oomguard",
    ):
        assert key in manifest, key
    header = (directory / "memory_log.csv").read_text().splitlines()[0]
    assert header.startswith("time,elapsed_sec,rss_mb,vms_mb,cgroup_mb,mem_available_mb")
    return summary


def test_child_past_the_cap_is_oom_killed(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    result = reproduce([sys.executable, "-c", GREEDY], 200 * MiB, output_dir=tmp_path / "out")
    assert result.exit_code == 137 and result.oom_killed
    summary = check_artifacts(tmp_path / "out")
    assert summary["oom_killed"] is True and summary["exit_code"] == 137
    assert 0.95 * 200 <= summary["peak_cgroup_mb"] <= 200
    assert summary["cap_mb"] == 200
    assert summary["oom_kill_times"], "the kill is marked for the report"
    rows = (tmp_path / "out" / "memory_log.csv").read_text().splitlines()
    assert any(",oom_kill pid=" in row for row in rows), "the kill is marked in memory_log.csv"
    assert summary["cgroup_events"]["run_group"]["oom_kill"] == 1
    assert "OOM-killed at" in result.verdict and "of a 200.0 MiB cap" in result.verdict
    if summary["dmesg_excerpt"]:
        assert "Killed process" in (tmp_path / "out" / "dmesg_excerpt.txt").read_text()


def test_child_under_the_cap_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "input.bin"
    data.write_bytes(b"abc")
    result = reproduce(
        [sys.executable, "-c", MODEST, str(data)], 200 * MiB, output_dir=tmp_path / "out"
    )
    assert result.exit_code == 0 and not result.oom_killed
    summary = check_artifacts(tmp_path / "out")
    assert summary["oom_killed"] is False
    assert summary["peak_cgroup_mb"] >= 30 or summary["enforcement"] == "watchdog"
    assert (tmp_path / "out" / "stdout.txt").read_text().startswith("done")
    assert "to stderr" in (tmp_path / "out" / "stderr.txt").read_text()
    manifest = json.loads(next((tmp_path / "out").glob("run_manifest_*.json")).read_text())
    assert manifest["inputs"] == [
        {
            "path": str(data),
            "size": 3,
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }
    ]


def test_the_watchdog_path_gives_the_same_artifacts(tmp_path: Path) -> None:
    result = reproduce(
        [sys.executable, "-c", GREEDY],
        200 * MiB,
        output_dir=tmp_path / "out",
        limiter_mode="watchdog",
        interval=0.05,
    )
    assert result.exit_code == 137 and result.oom_killed
    summary = check_artifacts(tmp_path / "out")
    assert summary["enforcement"] == "watchdog"
    assert summary["oom_killed"] is True


def test_exit_code_and_timeout(tmp_path: Path) -> None:
    failing = reproduce(
        [sys.executable, "-c", "raise SystemExit(5)"], 100 * MiB, output_dir=tmp_path / "a"
    )
    assert failing.exit_code == 5 and not failing.oom_killed
    hung = reproduce(
        [sys.executable, "-c", "import threading; threading.Event().wait()"],
        100 * MiB,
        output_dir=tmp_path / "b",
        timeout=1.0,
    )
    assert hung.summary["timed_out"] is True
    assert hung.summary["signal"] == 9 and hung.exit_code == 128 + 9
    assert not hung.oom_killed and "timeout" in hung.verdict


def test_a_cap_above_95_percent_of_the_budget_is_refused(tmp_path: Path) -> None:
    from oomguard.memory import effective_budget

    with pytest.raises(ConfigError, match="--allow-large-cap"):
        reproduce(["true"], int(effective_budget().bytes * 0.97), output_dir=tmp_path / "x")


def test_cli_repro(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    result = run_cli(
        "repro",
        "--memory",
        "150m",
        "--output-dir",
        str(tmp_path / "o"),
        "--",
        sys.executable,
        "-c",
        GREEDY,
        timeout=120,
    )
    assert result.returncode == 137
    assert "OOM-killed at" in result.stderr
    missing = run_cli("repro", "--memory", "150m", timeout=60)
    assert missing.returncode == 2 and "no command given" in missing.stderr


def test_the_peak_is_the_kernels_not_the_last_sample(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    # 400 MiB at once under a 200 MiB cap, sampled every 5 s: the kill comes between samples
    result = reproduce(
        [sys.executable, "-c", "x = bytearray(400 * 1024 * 1024)"],
        200 * MiB,
        output_dir=tmp_path / "out",
        interval=5.0,
    )
    assert result.oom_killed
    assert result.summary["peak_rss_mb"] >= 0.8 * 200, result.summary


def test_a_cap_too_small_to_start_anything_is_refused(tmp_path: Path) -> None:
    for tiny in ("1b", "1k"):
        refused = run_cli(
            "repro",
            "--memory",
            tiny,
            "-o",
            str(tmp_path / tiny),
            "--",
            sys.executable,
            "-c",
            "pass",
        )
        assert refused.returncode == 2 and "below the 32.0 MiB" in refused.stderr, refused.stderr
