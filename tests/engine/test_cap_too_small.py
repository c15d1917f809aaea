"""A cap too small for an idle worker is refused before any work, in one line, with what an
idle worker was measured to hold (engine/idle_worker.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from oomguard import ConfigError, Job
from oomguard.engine.fork_server import close_idle
from tests.conftest import require_cgroups
from tests.helpers.cli import cli_env, run_cli

REFUSAL = re.compile(r"the cap of 48\.0 MiB is below an idle worker's ~(\d+\.\d) MiB")


def _job(tmp_path: Path, name: str) -> Job:
    return Job(
        "tests.engine.oversized_import:work",
        source=[1, 2, 3],
        sink=tmp_path / f"{name}.jsonl",
        run_dir=tmp_path / name,
        memory="48m",
        workers=2,
        log_format="quiet",
    )


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_a_cap_below_an_idle_worker_is_refused_with_the_measured_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function's module holds 64 MiB once imported: under a 48 MiB cap every worker
    is OOM-killed while it loads; a probe worker measures it, and nothing ran. The
    measurement is kept for the fork server: the next job is refused before any worker
    starts."""
    require_cgroups()
    close_idle()  # a fork server of its own: nothing measured by an earlier test
    monkeypatch.setenv("OOMGUARD_TEST_IMPORT_MB", "64")
    with pytest.raises(ConfigError) as refused:
        _job(tmp_path, "first").run()
    found = REFUSAL.search(str(refused.value))
    assert found is not None, str(refused.value)
    assert 64 <= float(found.group(1)) < 64 + 48  # the import, and an interpreter's pages
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["counts"].get("success", 0) == 0
    failed = [e for e in summary["events"] if e["event"] == "worker_failed_to_start"]
    assert failed and {e["status"] for e in failed} == {"oom_killed"}

    with pytest.raises(ConfigError, match=REFUSAL):
        _job(tmp_path, "second").run()
    again = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert again["worker_starts"] == 0  # refused from the figure measured for the first


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_a_job_that_ran_measures_its_idle_worker_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose workers load under its cap reads what the first holds as it says ready;
    a next job of the process on the same fork server with a cap below that is refused
    before any worker starts."""
    require_cgroups()
    close_idle()  # a fork server of its own: nothing measured by an earlier test
    monkeypatch.setenv("OOMGUARD_TEST_IMPORT_MB", "64")
    fits = Job(
        "tests.engine.oversized_import:work", source=[1, 2], sink=tmp_path / "fits.jsonl",
        run_dir=tmp_path / "fits", memory="256m", workers=1, log_format="quiet",
    ).run()  # fmt: skip
    assert fits.counts == {"success": 2}
    with pytest.raises(ConfigError, match=REFUSAL):
        _job(tmp_path, "next").run()
    summary = json.loads((tmp_path / "next" / "summary.json").read_text())
    assert summary["worker_starts"] == 0


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_the_cli_refuses_a_cap_below_an_idle_worker_in_one_line(tmp_path: Path) -> None:
    require_cgroups()
    items = tmp_path / "items.jsonl"
    items.write_text("1\n2\n")
    done = run_cli(
        "run",
        "tests.engine.oversized_import:work",
        "--input",
        str(items),
        "--memory",
        "48m",
        "--workers",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        "--log-format",
        "quiet",
        env=cli_env(OOMGUARD_TEST_IMPORT_MB="64"),
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and REFUSAL.search(lines[0]), done.stderr


def test_a_cap_below_the_minimum_is_refused_in_the_same_words(tmp_path: Path) -> None:
    job = Job(
        "tests.engine.oversized_import:work",
        source=[1],
        sink=tmp_path / "out.jsonl",
        run_dir=tmp_path / "run",
        memory="16m",
        log_format="quiet",
    )
    with pytest.raises(ConfigError, match=r"^the cap of 16\.0 MiB is below the 32\.0 MiB"):
        job.run()
