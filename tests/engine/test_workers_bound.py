"""``--workers`` is bounded: never more workers than items left, and at most a multiple of
the cores (clamped, with a warning, not refused: a config written for a bigger machine
still runs here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import run_cli


def test_no_more_workers_than_items_left(run_job) -> None:  # type: ignore[no-untyped-def]
    result, lines = run_job([{"kind": "ok", "value": i} for i in range(3)], workers=6)
    assert len(lines) == 3
    assert result.summary["workers"] == 3 and result.summary["worker_starts"] == 3


def test_far_more_workers_than_cores_are_clamped_with_a_warning(tmp_path: Path) -> None:
    cores = os.cpu_count() or 1
    per_core = 8  # engine/config.py MAX_WORKERS_PER_CORE, as the README says
    source = write_jsonl(tmp_path / "in.jsonl", [{"kind": "ok", "value": i} for i in range(200)])
    asked = per_core * cores + 4
    result = run_cli(
        "run", WORK, "-i", str(source), "-o", str(tmp_path / "o.jsonl"), "--run-dir",
        str(tmp_path / "run"), "-w", str(asked), "--log-format", "quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("oomguard: warning:")]
    assert len(warning) == 1 and f"workers {asked}" in warning[0], result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["workers"] == per_core * cores
