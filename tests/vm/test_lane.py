"""The v2 lane where it cannot start: CI fails, saying why; a developer's machine skips."""

import os
import subprocess
import sys
from pathlib import Path

LANE = Path(__file__).with_name("lane.py")


def run_lane(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": str(tmp_path), "CI": ci, "OOMGUARD_VM_CACHE": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(LANE)], capture_output=True, text=True, env=env, timeout=60
    )


def test_without_qemu_the_lane_fails_under_ci(tmp_path: Path) -> None:
    result = run_lane(tmp_path, "true")
    assert result.returncode == 1
    assert "FAILED: the VM cannot start: qemu-system-x86_64 is not installed" in result.stdout


def test_without_qemu_the_lane_skips_elsewhere_with_the_reason(tmp_path: Path) -> None:
    result = run_lane(tmp_path, "")
    assert result.returncode == 0
    assert "SKIPPED (not under CI=true)" in result.stdout and "qemu-system-x86" in result.stdout
