"""Resuming with a larger cap: the natural next step after a cap too small or an item
quarantined as oom_killed (``resume --memory``, ``retry-quarantined --memory``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oomguard import Job
from oomguard.journal.store import Journal
from tests.conftest import require_cgroups
from tests.engine.conftest import read_output, write_jsonl
from tests.helpers.cli import cli_env, run_cli

WORK = "tests.engine.workloads:work"


def _sessions(run_dir: Path) -> list[dict[str, Any]]:
    manifest = json.loads((run_dir / "ingest_manifest.json").read_text())
    return [entry for entry in manifest if entry.get("event") == "session"]


@pytest.mark.cgroups
@pytest.mark.timeout(180)
def test_retry_quarantined_with_a_bigger_cap_finishes_the_oom_killed_item(
    tmp_path: Path,
) -> None:
    """Item 3 needs 300 MiB: under 200 MiB it is quarantined as oom_killed; retried from
    the command line with --memory 600m and one worker it is done, once."""
    require_cgroups()
    items = [{"kind": "grow", "mb": 8} for _ in range(8)]
    items[3] = {"kind": "grow", "mb": 300}
    source = write_jsonl(tmp_path / "items.jsonl", items)
    out, run_dir = tmp_path / "out.jsonl", tmp_path / "run"
    first = Job(
        WORK, source=source, sink=out, run_dir=run_dir, memory="200m", workers=2,
        batch_size=2, log_format="quiet",
    ).run()  # fmt: skip
    assert [(q["input_index"], q["status"]) for q in first.quarantined] == [(3, "oom_killed")]

    retried = run_cli(
        "retry-quarantined", str(run_dir), "--memory", "600m", "--workers", "1",
        "--log-format", "quiet", env=cli_env(),
    )  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    indices = sorted(line["input_index"] for line in read_output(out))
    assert indices == list(range(8))
    assert (run_dir / "quarantine.jsonl").read_text() == ""
    last = _sessions(run_dir)[-1]
    assert last["resumed"] and last["memory_mb"] == 600 and last["workers"] == 1


@pytest.mark.cgroups
@pytest.mark.timeout(180)
def test_resume_with_a_bigger_cap_after_a_cap_too_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run refused for a cap below an idle worker (exit 2) resumes with --memory and
    --workers: every item done once, the new settings kept in the journal for the next
    session and each session's settings in the manifest."""
    require_cgroups()
    monkeypatch.setenv("OOMGUARD_TEST_IMPORT_MB", "64")
    source = write_jsonl(tmp_path / "items.jsonl", list(range(6)))
    out, run_dir = tmp_path / "out.jsonl", tmp_path / "run"
    common = ("--log-format", "quiet")
    refused = run_cli(
        "run", "tests.engine.oversized_import:work", "--input", str(source), "--output",
        str(out), "--memory", "48m", "--workers", "2", "--run-dir", str(run_dir), *common,
        env=cli_env(),
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    resumed = run_cli(
        "resume", str(run_dir), "--memory", "300m", "--workers", "1", *common, env=cli_env()
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(line["result"] for line in read_output(out)) == list(range(6))
    sessions = _sessions(run_dir)
    assert [(s["memory_mb"], s["workers"], s["resumed"]) for s in sessions] == [
        (48, 2, False),
        (300, 1, True),
    ]
    journal = Journal(run_dir / "journal.sqlite", read_only=True)
    try:
        assert journal.get_meta("memory") == 300 * 2**20
        assert journal.get_meta("config")["workers"] == 1
    finally:
        journal.close()
