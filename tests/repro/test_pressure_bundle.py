"""simulate-pressure (capped, real allocations) and bug-report bundles."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from oomguard.repro import make_bundle, reproduce, simulate_pressure
from tests.helpers.cli import run_cli


@pytest.mark.parametrize("native", [False, True])
def test_memory_comes_back(native: bool) -> None:
    report = simulate_pressure(300, native=native)
    assert report["reclaimed"], report
    assert report["peak_mb"] >= report["baseline_mb"] + 250


def test_a_child_that_keeps_its_memory_fails() -> None:
    report = simulate_pressure(300, native=True, retain_mb=200)
    assert not report["reclaimed"]
    assert report["stayed_mb"] >= 190


def test_cli_exit_codes() -> None:
    ok = run_cli("simulate-pressure", "--target-mb", "200", timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("reclaimed"), ok.stderr
    kept = run_cli(
        "simulate-pressure", "--target-mb", "200", "--native", "--retain-mb", "150", timeout=120
    )
    assert kept.returncode == 1 and kept.stdout.startswith("not reclaimed")


def test_bundle_with_and_without_redaction(tmp_path: Path) -> None:
    secret = tmp_path / "candidate-data-secret.jsonl"
    secret.write_text('{"name": "Jane Doe"}\n')
    reproduce(
        [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())", str(secret)],
        100 * 1024**2,
        output_dir=tmp_path / "run",
    )
    plain = make_bundle(tmp_path / "run", tmp_path / "plain.zip")
    with zipfile.ZipFile(plain) as archive:
        names = set(archive.namelist())
        assert {"summary.json", "memory_log.csv", "stdout.txt", "BUNDLE.txt"} <= names
        everything = b"".join(archive.read(n) for n in names)
        assert b"candidate-data-secret" in everything and b"Jane Doe" in everything
    redacted = make_bundle(tmp_path / "run", tmp_path / "redacted.zip", redacted=True)
    with zipfile.ZipFile(redacted) as archive:
        names = set(archive.namelist())
        assert "stdout.txt" not in names and "summary.json" in names
        everything = b"".join(archive.read(n) for n in names)
        assert b"candidate-data-secret" not in everything and b"Jane Doe" not in everything
        manifest = json.loads(archive.read(next(n for n in names if n.startswith("run_manifest_"))))
        (entry,) = manifest["inputs"]
        assert set(entry) == {"size", "sha256"} and entry["size"] == secret.stat().st_size
        summary = json.loads(archive.read("summary.json"))
        assert summary["cap_mb"] == 100 and isinstance(summary["peak_rss_mb"], float)
    assert (redacted.stat().st_mode & 0o777) == 0o600
