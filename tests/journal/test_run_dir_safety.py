"""A run directory is trusted only when it is the user's own: planted links, directories of
others, a crafted or deleted journal. Real files, real processes, the real command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import cli_env, oomguard_argv, run_cli
from tests.helpers.gates import Gate

OK = [{"kind": "ok", "value": i} for i in range(5)]
PRECIOUS = "precious, and not oomguard's\n"


def run(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", WORK, *map(str, args), "--log-format", "quiet", "-w", "1")


def test_planted_links_in_a_run_directory_are_never_followed(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*OK, {"kind": "raise", "value": 9}])
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    victims = {}
    for name in ("memory_log.csv", "quarantine.jsonl", "summary.json.tmp", "dmesg_excerpt.txt"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text(PRECIOUS)
        (run_dir / name).symlink_to(victim)
        victims[name] = victim
    result = run(tmp_path, "-i", source, "-o", tmp_path / "out.jsonl", "--run-dir", run_dir)
    assert result.returncode == 3, result.stderr  # ran, with its one bad item quarantined
    for name, victim in victims.items():
        assert victim.read_text() == PRECIOUS, name
        assert not (run_dir / name).is_symlink()
    assert json.loads((run_dir / "quarantine.jsonl").read_text())["input_index"] == 5


@pytest.mark.parametrize("name", ["results.jsonl", "journal.sqlite", "supervisor.lock"])
def test_a_planted_link_where_the_run_keeps_its_state_is_refused(tmp_path: Path, name: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text(PRECIOUS)
    (run_dir / name).symlink_to(victim)
    result = run(tmp_path, "-i", source, "--run-dir", run_dir)
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert victim.read_text() == PRECIOUS


def test_a_run_directory_of_someone_else_or_open_to_others_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    refused = run(tmp_path, "-i", source, "--run-dir", theirs)
    assert refused.returncode == 2 and "owned by uid 65534" in refused.stderr, refused.stderr
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "journal.sqlite").write_bytes(b"")  # anyone could have put it there
    shared.chmod(0o777)
    refused = run(tmp_path, "-i", source, "--run-dir", shared)
    assert refused.returncode == 2 and "others may write into it" in refused.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o777)  # nothing planted yet: made private, then used
    used = run(tmp_path, "-i", source, "-o", tmp_path / "o.jsonl", "--run-dir", empty)
    assert used.returncode == 0, used.stderr
    assert empty.stat().st_mode & 0o777 == 0o700


def test_a_journal_naming_another_file_does_not_make_resume_cut_it(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    first = run(tmp_path, "-i", source, "-o", tmp_path / "out.jsonl", "--run-dir", tmp_path / "run")
    assert first.returncode == 0, first.stderr
    victim = tmp_path / "victim.jsonl"
    victim.write_text(PRECIOUS * 1000)  # longer than the journal's last committed offset
    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'sink'", (json.dumps(str(victim)),))
    db.close()
    refused = run_cli("resume", str(tmp_path / "run"), "--log-format", "quiet")
    assert refused.returncode == 2 and "not the file this run wrote" in refused.stderr
    assert victim.read_text() == PRECIOUS * 1000


def test_a_journal_deleted_mid_run_stops_the_run(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    source = write_jsonl(tmp_path / "in.jsonl", [*OK, gate.item(), *OK])
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        oomguard_argv(
            "run", WORK, "-i", str(source), "-o", str(tmp_path / "out.jsonl"),
            "--run-dir", str(run_dir), "-w", "1", "--batch-size", "1", "--log-format", "quiet",
        ),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        gate.wait_running(proc)
        (run_dir / "journal.sqlite").unlink()  # a careless cleanup while the run goes on
        gate.open()
        code = proc.wait(timeout=120)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert code != 0 and "items done" not in stderr, stderr
    assert "journal" in stderr and "deleted" in stderr and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
