"""``oomguard run`` end to end, as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.conftest import write_jsonl
from tests.helpers.cli import run_cli as oomguard


def test_all_done_exits_0(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"kind": "ok", "value": i} for i in range(30)])
    out = tmp_path / "out.jsonl"
    result = oomguard(
        "run",
        "tests.engine.workloads:work",
        "--input",
        str(source),
        "--output",
        str(out),
        "--memory",
        "512m",
        "--workers",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        "--log-format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 30
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "finished" and events[-1]["done"] == 30
    assert "30 items done, 0 quarantined" in result.stderr


def test_quarantine_exits_3_and_says_why(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"kind": "ok", "value": 1}, {"kind": "raise", "value": 2}]
    )
    result = oomguard(
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
        "-w",
        "1",
    )
    assert result.returncode == 3
    assert "quarantined item 1: error bad item 2" in result.stderr


def test_config_file_has_the_same_keys(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"kind": "ok", "value": i} for i in range(5)])
    config = tmp_path / "oomguard.toml"
    config.write_text(
        f'input = "{source}"\noutput = "{tmp_path / "o.jsonl"}"\nmemory = "256m"\nworkers = 1\n'
        f'batch_size = 2\nrun_dir = "{tmp_path / "run"}"\nlog_format = "quiet"\n'
    )
    result = oomguard("run", "tests.engine.workloads:work", "--config", str(config))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["cap_mb"] == 256.0 and summary["batch_size"] == 2 and summary["workers"] == 1


def test_config_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [1])
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = 2\nflavour = 'x'\n")
    cases = [
        ("run", "tests.engine.workloads:work", "-i", str(tmp_path / "missing.jsonl")),
        (
            "run",
            "tests.engine.workloads:nope",
            "-i",
            str(source),
            "--run-dir",
            str(tmp_path / "r1"),
        ),
        ("run", "tests.engine.workloads:work", "-i", str(source), "--memory", "7 bananas"),
        ("run", "tests.engine.workloads:work", "--config", str(bad), "-i", str(source)),
        ("run", "tests.engine.workloads:work"),
    ]
    for args in cases:
        result = oomguard(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("oomguard: error:"), result.stderr


def test_function_in_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mytask.py").write_text("def double(x):\n    return x * 2\n")
    write_jsonl(tmp_path / "in.jsonl", [1, 2, 3])
    result = oomguard(
        "run",
        "mytask:double",
        "-i",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "--run-dir",
        "run",
        "--log-format",
        "quiet",
        "-w",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [
        json.loads(line)["result"] for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ] == [2, 4, 6]
