"""Items have names: a directory's file paths, or a label field of any source, beside
input_index wherever a person reads them (progress, quarantine.jsonl, status, the
journal's attempts); they survive resume and retry-quarantined."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oomguard import Job
from oomguard.engine.progress import LineProgress, Snapshot
from oomguard.engine.run_status import run_status
from oomguard.engine.sources import open_source
from oomguard.errors import ConfigError, OomguardWarning
from oomguard.journal.store import Journal
from tests.engine.conftest import WORK, manifest, read_output, write_jsonl
from tests.helpers.cli import run_cli


def _tree(root: Path) -> Path:
    """a.pdf, notes.txt, scans/b.pdf, scans/deep/c.pdf, scans/deep/readme.md"""
    (root / "scans" / "deep").mkdir(parents=True)
    for name in ("a.pdf", "notes.txt", "scans/b.pdf", "scans/deep/c.pdf", "scans/deep/readme.md"):
        (root / name).write_bytes(b"%PDF" if name.endswith(".pdf") else b"text")
    return root


def test_a_directory_by_default_reads_its_own_files_and_warns_of_subdirectories(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path / "in")
    with pytest.warns(OomguardWarning, match=r"1 subdirectories .*'scans'.* --glob '\*\*/\*'"):
        items = list(open_source(root))
    assert [(i.index, i.label) for i in items] == [(0, "a.pdf"), (1, "notes.txt")]
    assert items[0].value == {"path": str(root / "a.pdf"), "size": 4}


def test_a_glob_with_two_stars_recurses_and_takes_only_what_it_matches(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in")
    items = list(open_source(root, glob="**/*.pdf"))
    assert [i.label for i in items] == ["a.pdf", "scans/b.pdf", "scans/deep/c.pdf"]
    assert open_source(root, glob="**/*.pdf").count() == 3
    with pytest.warns(OomguardWarning, match=r"--glob '\*\*/\*\.pdf' recurses"):
        assert [i.label for i in open_source(root, glob="*.pdf")] == ["a.pdf"]


@pytest.mark.parametrize("pattern", ["/etc/*", "../*"])
def test_a_glob_outside_the_directory_is_refused(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ConfigError, match="invalid glob"):
        open_source(_tree(tmp_path / "in"), glob=pattern)


def test_a_glob_for_a_file_input_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [1])
    with pytest.raises(ConfigError, match="picks the files of a directory input"):
        open_source(source, glob="*.pdf")


def test_a_label_field_names_the_items_of_any_source(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", [{"id": "mol-1"}, {"x": 2}, {"id": 7}])
    labels = [i.label for i in open_source(source, label_field="id")]
    assert labels == ["mol-1", None, "7"]
    iterable = open_source([{"id": "a"}, "plain"], label_field="id")
    assert [i.label for i in iterable] == ["a", None]


def test_the_progress_line_names_the_last_failed_item(capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = Snapshot(
        done=3, total=9, succeeded=2, quarantined=1, in_flight=1, oom_kills=1,
        memory_used=1 << 20, memory_cap=1 << 30, elapsed=1.0,
        last_failed="item 4 (scans/big.pdf) oom_killed",
    )  # fmt: skip
    LineProgress(as_json=False).update(snapshot)
    assert "quarantined 1 (last: item 4 (scans/big.pdf) oom_killed)" in capsys.readouterr().err


def _items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"kind": "ok", "value": n, "id": f"doc-{n}"} for n in range(6)]
    items[2] = {"kind": "raise", "value": 2, "id": "doc-2"}
    return items


def _quarantine_file(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "quarantine.jsonl").open()]


@pytest.mark.timeout(120)
def test_labels_reach_quarantine_status_and_attempts_and_survive_resume_and_retry(
    tmp_path: Path,
) -> None:
    source = write_jsonl(tmp_path / "items.jsonl", _items())
    run_dir, out = tmp_path / "run", tmp_path / "out.jsonl"
    options: dict[str, Any] = dict(workers=1, batch_size=1, memory="512m", log_format="quiet")
    result = Job(WORK, source=source, sink=out, run_dir=run_dir, label_field="id", **options).run()
    assert [(q["input_index"], q["label"]) for q in result.quarantined] == [(2, "doc-2")]
    assert list(_quarantine_file(run_dir)[0]) == ["input_index", "label", "status", "evidence"]
    failed = [a for a in manifest(run_dir) if a.get("status") == "error"]
    assert failed and failed[0]["label"] == "doc-2"
    assert failed[0]["items_failed"] == [{"input_index": 2, "status": "error", "label": "doc-2"}]
    status = run_status(run_dir)
    assert [(q["input_index"], q["label"]) for q in status["quarantined"]] == [(2, "doc-2")]

    (run_dir / "quarantine.jsonl").write_text("")  # resume writes it again from the journal
    Job.resume(run_dir, log_format="quiet")
    assert [q["label"] for q in _quarantine_file(run_dir)] == ["doc-2"]

    again = Job.retry_quarantined(run_dir, log_format="quiet")  # fails again, named again
    assert [(q["input_index"], q["label"]) for q in again.quarantined] == [(2, "doc-2")]
    journal = Journal(run_dir / "journal.sqlite", read_only=True)
    try:
        assert [q.get("label") for q in journal.quarantined()] == ["doc-2"]
    finally:
        journal.close()
    assert len(read_output(out)) == 5


@pytest.mark.timeout(120)
def test_the_cli_takes_glob_and_label_field(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.pdf").write_bytes(b"%PDF")
    (root / "skip.txt").write_bytes(b"no")
    out = tmp_path / "out.jsonl"
    done = run_cli(
        "run", "tests.engine.workloads:path_of", "--input", str(root), "--glob", "**/*.pdf",
        "--output", str(out), "--run-dir", str(tmp_path / "run"), "--memory", "256m",
        "--workers", "1", "--log-format", "quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line["result"] for line in read_output(out)] == [str(root / "sub" / "x.pdf")]
    help_text = run_cli("run", "--help").stdout
    assert "--glob" in help_text and "--label-field" in help_text and "recurses" in help_text


def test_a_journal_from_before_labels_is_read_and_gains_them(tmp_path: Path) -> None:
    import sqlite3

    from oomguard.journal.store import Checkpoint

    Journal.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.execute("ALTER TABLE quarantine DROP COLUMN label")
    db.execute("INSERT INTO quarantine VALUES (3, 'error', '{}', 0)")
    db.commit()
    db.close()
    old = Journal(tmp_path / "journal.sqlite", read_only=True)
    assert list(old.quarantined()) == [{"input_index": 3, "status": "error", "evidence": {}}]
    old.close()
    journal = Journal.open(tmp_path)
    journal.checkpoint(Checkpoint([], None, [(4, "error", {}, "doc-4")], [], []))
    assert [q.get("label") for q in journal.quarantined()] == [None, "doc-4"]
    journal.close()


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_the_item_a_worker_died_running_is_named_in_its_attempt(tmp_path: Path) -> None:
    from tests.conftest import require_cgroups

    require_cgroups()
    items: list[dict[str, Any]] = [{"kind": "ok", "value": n, "id": f"m{n}"} for n in range(4)]
    items[1] = {"kind": "grow", "mb": 400, "id": "giant"}
    source = write_jsonl(tmp_path / "items.jsonl", items)
    result = Job(
        WORK, source=source, sink=tmp_path / "out.jsonl", run_dir=tmp_path / "run",
        memory="200m", workers=1, batch_size=4, label_field="id", log_format="quiet",
    ).run()  # fmt: skip
    assert [(q["input_index"], q["label"], q["status"]) for q in result.quarantined] == [
        (1, "giant", "oom_killed")
    ]
    deaths = [a for a in manifest(tmp_path / "run") if a["status"] == "oom_killed"]
    assert deaths and all(a["running_item"] == {"input_index": 1, "label": "giant"} for a in deaths)
