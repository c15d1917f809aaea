"""Intake pauses for memory that is really held, never for page cache, and never stalls."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oomguard import ConfigError, Job
from tests.conftest import require_cgroups
from tests.helpers.files import uncached_file

MiB = 1024 * 1024


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_page_cache_filling_the_cap_never_pauses_intake(
    run_job: Callable[..., Any], tmp_path: Path
) -> None:
    """A file-reading job fills its cgroup with cache up to the cap (the kernel reclaims
    it there): counted as usage, intake would pause with nothing left to free it."""
    require_cgroups()
    # each file read once, as a directory of PDFs is: a page read twice moves to the
    # active list, which the working set counts (as the kubelet's does)
    files = [uncached_file(tmp_path / f"f{n}.bin", 80 * MiB) for n in range(6)]
    items = [{"kind": "read", "path": str(path)} for path in files]
    result, out = run_job(items, memory="160m", workers=2)
    assert sorted(line["result"]["read"] for line in out) == [80 * MiB] * 6
    summary = result.summary
    assert summary["peak_cgroup_mb"] >= 0.85 * 160  # the cache did fill the cap ...
    assert summary["peak_working_set_mb"] < 0.85 * 160  # ... but it was never held
    assert summary["admission"]["pauses"] == 0


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_a_pause_with_nothing_in_flight_still_runs_a_batch(
    run_job: Callable[..., Any],
) -> None:
    """The one worker keeps 450 MiB of a 512 MiB cap after its first item (a leaky
    library) and holds the job over its high water for good: intake pauses, and with
    nothing in flight one batch at a time still goes (nothing else could end the pause)."""
    require_cgroups()
    items = [{"kind": "leak", "mb": 450}] + [{"kind": "ok", "value": i} for i in range(12)]
    result, out = run_job(items, memory="512m", workers=1, batch_size=1)
    assert len(out) == 13 and result.counts == {"success": 13}
    assert result.summary["admission"]["pauses"] >= 1
    assert any(
        event.get("reason", "").startswith("working set") for event in result.summary["events"]
    )


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_workers_oom_killed_while_they_load_stop_the_run_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker is OOM-killed while importing the function: one line, exit 2 (before,
    the supervisor spun at 100% CPU on the dead worker's socket, forever)."""
    require_cgroups()
    monkeypatch.setenv("OOMGUARD_TEST_IMPORT_MB", "1200")
    job = Job(
        "tests.engine.oversized_import:work",
        source=[1, 2, 3],
        sink=tmp_path / "out.jsonl",
        run_dir=tmp_path / "run",
        memory="1g",
        workers=1,
        log_format="quiet",
    )
    with pytest.raises(ConfigError, match="below an idle worker"):
        job.run()


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_replacements_that_die_while_loading_stop_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker loads; once it crashes, every replacement is OOM-killed while it
    imports the module: after a few in a row the run stops, it does not restart them
    forever; what was done is journaled."""
    require_cgroups()
    monkeypatch.setenv("OOMGUARD_TEST_IMPORT_MB", "1200")
    monkeypatch.setenv("OOMGUARD_TEST_IMPORT_MARKER", str(tmp_path / "imported-once"))
    job = Job(
        "tests.engine.oversized_import:work",
        source=["exit"],
        sink=tmp_path / "out.jsonl",
        run_dir=tmp_path / "run",
        memory="1g",
        workers=1,
        batch_size=1,
        log_format="quiet",
    )
    with pytest.raises(ConfigError, match="below an idle worker"):
        job.run()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    failed = [e for e in summary["events"] if e["event"] == "worker_failed_to_start"]
    assert len(failed) == 3 and {e["status"] for e in failed} == {"oom_killed"}
