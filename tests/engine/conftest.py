from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oomguard.engine import Job, RunResult

WORK = "tests.engine.workloads:work"


def write_jsonl(path: Path, items: list[Any]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def manifest(run_dir: Path) -> list[dict[str, Any]]:
    """The batch attempts of ingest_manifest.json (its other entries are events)."""
    entries = json.loads((run_dir / "ingest_manifest.json").read_text())
    return [entry for entry in entries if "batch_id" in entry]


@pytest.fixture
def run_job(tmp_path: Path) -> Callable[..., tuple[RunResult, list[dict[str, Any]]]]:
    """Run a job over ``items`` into tmp_path; returns the result and the output lines."""

    def run(
        items: list[Any],
        function: str = WORK,
        name: str = "run",
        as_iterable: bool = False,
        **options: Any,
    ) -> tuple[RunResult, list[dict[str, Any]]]:
        """``as_iterable``: the items are the source as they are, not written to a file."""
        source = items if as_iterable else write_jsonl(tmp_path / f"{name}-items.jsonl", items)
        out = tmp_path / f"{name}-out.jsonl"
        options.setdefault("log_format", "quiet")
        options.setdefault("workers", 2)
        options.setdefault("memory", "512m")
        result = Job(function, source=source, sink=out, run_dir=tmp_path / name, **options).run()
        return result, read_output(out) if out.exists() else []

    return run
