"""Running the ``oomguard`` command as a user types it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``oomguard`` (tests/conftest.py made PYTHONPATH absolute)."""
    return {**os.environ, **extra}


def oomguard_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "oomguard.cli", *args]


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        oomguard_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env or cli_env(),
        check=False,
    )
