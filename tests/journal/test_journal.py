"""The journal and resume, with real SQLite, real files and real processes."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oomguard import ConfigError, Job
from oomguard.engine.fork_server import close_idle, idle_pid
from oomguard.errors import DiskFullError
from oomguard.journal import Checkpoint, Journal, RangeSet, RunLock, decode_ranges, encode_ranges
from oomguard.limits import CgroupLimiter
from tests.engine.conftest import WORK, read_output, write_jsonl
from tests.helpers.cli import run_cli as cli

ROOT = Path(__file__).parents[2]


@given(st.sets(st.integers(min_value=0, max_value=500)))
def test_ranges_round_trip(indices: set[int]) -> None:
    assert {i for a, b in decode_ranges(encode_ranges(indices)) for i in range(a, b)} == indices
    ranges = RangeSet()
    for index in indices:
        ranges.add(index)
    assert len(ranges) == len(indices)
    assert all(i in ranges for i in indices)
    assert not any(i in ranges for i in range(-1, 502) if i not in indices)


@given(st.lists(st.integers(min_value=0, max_value=60)))
def test_ranges_of_indices_in_any_order_with_repeats(indices: list[int]) -> None:
    ranges = decode_ranges(encode_ranges(indices))
    assert [i for a, b in ranges for i in range(a, b)] == sorted(set(indices))
    assert all(stop < start for (_, stop), (start, _) in itertools.pairwise(ranges))  # merged


def test_rangeset_merges() -> None:
    ranges = RangeSet()
    ranges.add_range(10, 20)
    ranges.add_range(30, 40)
    ranges.add_range(20, 30)
    assert ranges.ranges() == [(10, 40)]
    assert encode_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_checkpoint_is_all_or_nothing_and_private(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.checkpoint(
        Checkpoint(
            [0, 1, 2],
            "120",
            [(3, "error", {"message": "x"})],
            [{"batch_id": 1, "status": "success"}],
            [],
        )
    )
    with pytest.raises(sqlite3.ProgrammingError):  # a bad attempt: the whole transaction rolls back
        journal.checkpoint(Checkpoint([4, 5], "200", [], [{"batch_id": object()}], []))
    assert sorted(i for a, b in journal.done_set().ranges() for i in range(a, b)) == [0, 1, 2, 3]
    assert journal.tokens() == ["120"]
    journal.close()
    assert (tmp_path / "journal.sqlite").stat().st_mode & 0o777 == 0o600


def test_a_journal_killed_at_birth_starts_afresh_and_another_database_is_refused(
    tmp_path: Path,
) -> None:
    """What a supervisor killed between SQLite's header and the schema leaves (a database
    with nothing in it) holds nothing to lose: the run starts in it. A database with
    tables that are not a journal's is someone's data, and is refused."""
    birth = tmp_path / "birth"
    birth.mkdir()
    db = sqlite3.connect(birth / "journal.sqlite")
    db.execute("PRAGMA journal_mode=WAL")  # the first thing a new journal does
    db.close()
    assert (birth / "journal.sqlite").stat().st_size > 0
    journal = Journal.open(birth)
    assert journal.is_new and journal.get_meta("schema_version") == 1
    journal.close()
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / "journal.sqlite")
    db.execute("CREATE TABLE accounts (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="not an oomguard journal"):
        Journal.open(other)


def run(tmp_path: Path, items: list[object] | None = None, **options: object):  # type: ignore[no-untyped-def]
    source = tmp_path / "items.jsonl"
    if items is not None:
        write_jsonl(source, items)
    options.setdefault("log_format", "quiet")
    options.setdefault("workers", 2)
    return Job(
        WORK, source=source, sink=tmp_path / "out.jsonl", run_dir=tmp_path / "run", **options
    ).run()


def test_running_again_resumes_and_redoes_nothing(tmp_path: Path) -> None:
    items = [{"kind": "ok", "value": i} for i in range(40)] + [{"kind": "raise", "value": 40}]
    first = run(tmp_path, items)
    assert first.succeeded == 40 and len(first.quarantined) == 1
    second = run(tmp_path)
    assert second.summary["attempts"] == first.summary["attempts"]  # no new attempt at all
    assert second.summary["sessions"] == 2
    assert len(read_output(tmp_path / "out.jsonl")) == 40
    assert [q["input_index"] for q in second.quarantined] == [40]  # quarantined stays quarantined


def test_a_changed_source_is_refused_unless_forced(tmp_path: Path) -> None:
    run(tmp_path, [{"kind": "ok", "value": i} for i in range(5)])
    with open(tmp_path / "items.jsonl", "a") as handle:
        handle.write(json.dumps({"kind": "ok", "value": 5}) + "\n")
    with pytest.raises(ConfigError, match=r"changed since this run started.*--force"):
        run(tmp_path)
    # the fork server boots before the journal is checked: a refused run leaves no process
    # but that server, kept idle for the next job
    kept = idle_pid()
    assert kept is not None
    assert [p.pid for p in psutil.Process().children(recursive=True)] == [kept]
    close_idle()
    assert psutil.Process().children(recursive=True) == []
    result = Job(
        WORK,
        source=tmp_path / "items.jsonl",
        sink=tmp_path / "out.jsonl",
        run_dir=tmp_path / "run",
        log_format="quiet",
    ).run(force=True)
    assert result.succeeded == 6
    assert sorted(line["input_index"] for line in read_output(tmp_path / "out.jsonl")) == list(
        range(6)
    )


def test_another_function_on_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    run(tmp_path, [{"kind": "ok", "value": 1}])
    with pytest.raises(ConfigError, match="belongs to a run of"):
        Job(
            "tests.engine.workloads:work_batch",
            source=tmp_path / "items.jsonl",
            run_dir=tmp_path / "run",
        ).run()


def test_second_supervisor_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    holder = RunLock(tmp_path / "run")
    holder.acquire()
    try:
        with pytest.raises(ConfigError, match="in use by another supervisor"):
            run(tmp_path, [{"kind": "ok", "value": 1}])
    finally:
        holder.release()
    assert run(tmp_path).succeeded == 1


SLOW_JOB = r"""
import sys
from oomguard import Job
Job("tests.engine.workloads:work", source=sys.argv[1], sink=sys.argv[2], run_dir=sys.argv[3],
    workers=1, log_format="json").run()
"""


def test_status_of_a_live_and_of_a_dead_run(tmp_path: Path) -> None:
    items = [{"kind": "ok", "value": 0}, {"kind": "hang"}]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_JOB, str(source), str(tmp_path / "o.jsonl"), str(run_dir)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        proc.stderr.readline()  # the first progress line: the supervisor is up and holds the lock
        live = cli("status", str(run_dir), "--json")
        assert live.returncode == 0, live.stderr
        report = json.loads(live.stdout)
        assert report["supervisor"]["pid"] == proc.pid
        assert report["state"] == "running"
        second = cli(
            "run", "tests.engine.workloads:work", "-i", str(source), "--run-dir", str(run_dir)
        )
        assert second.returncode == 2 and "in use by another supervisor" in second.stderr
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    dead = json.loads(cli("status", str(run_dir), "--json").stdout)
    assert dead["supervisor"] is None and dead["state"] == "stopped"
    assert dead["total"] == 2 and dead["function"] == "tests.engine.workloads:work"
    screen = cli("status", str(run_dir))
    assert "stopped" in screen.stdout
    assert cli("status", str(tmp_path)).returncode == 2


def test_resume_from_the_cli(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [{"kind": "ok", "value": i} for i in range(10)])
    first = cli(
        "run",
        "tests.engine.workloads:work",
        "-i",
        str(source),
        "-o",
        str(tmp_path / "o.jsonl"),
        "--run-dir",
        str(tmp_path / "run"),
        "--log-format",
        "quiet",
    )
    assert first.returncode == 0, first.stderr
    again = cli("resume", str(tmp_path / "run"), "--log-format", "quiet")
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 10
    assert cli("resume", str(tmp_path / "nothing")).returncode == 2


def test_retry_quarantined_with_more_memory(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    items = [{"kind": "grow", "mb": 10} for _ in range(6)]
    items[2] = {"kind": "grow", "mb": 450}
    first = run(tmp_path, items, memory="300m")
    assert [(q["input_index"], q["status"]) for q in first.quarantined] == [(2, "oom_killed")]
    retry = cli(
        "retry-quarantined", str(tmp_path / "run"), "--memory", "900m", "--log-format", "quiet"
    )
    assert retry.returncode == 0, retry.stderr
    assert sorted(line["input_index"] for line in read_output(tmp_path / "out.jsonl")) == list(
        range(6)
    )
    status = json.loads(cli("status", str(tmp_path / "run"), "--json").stdout)
    assert status["quarantined"] == [] and status["counts"]["success"] == 6


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 256 KiB tmpfs: a real file system that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=False
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_disk_full_sink_loses_nothing_and_resumes(tmp_path: Path, small_disk: Path) -> None:
    source = write_jsonl(
        tmp_path / "items.jsonl",
        [{"kind": "pad", "value": i, "pad": "x" * 400} for i in range(3000)],
    )
    out = small_disk / "out.jsonl"
    job_args = dict(
        source=source,
        sink=out,
        run_dir=tmp_path / "run",
        workers=2,
        log_format="quiet",
        commit_interval=0.01,
    )
    with pytest.raises(DiskFullError, match=r"out\.jsonl.*free space and run `oomguard resume "):
        Job(WORK, **job_args).run()  # type: ignore[arg-type]
    journal = Journal.open(tmp_path / "run")
    committed = journal.committed_set()
    offset = int(journal.tokens()[-1])
    journal.close()
    assert 0 < len(committed) < 3000
    # every committed result is intact in the sink, up to the committed offset
    durable = out.read_bytes()[:offset].decode().splitlines()
    assert sorted(json.loads(line)["input_index"] for line in durable) == sorted(
        i for a, b in committed.ranges() for i in range(a, b)
    )
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    result = Job(WORK, **job_args).run()  # type: ignore[arg-type]
    assert result.succeeded == 3000
    indices = [line["input_index"] for line in read_output(out)]
    assert sorted(indices) == list(range(3000))
