"""What a report is made of, read from a run directory, finished or not.

A finished run has summary.json, memory_log.csv and ingest_manifest.json. A run that was
interrupted (Ctrl-C, SIGTERM: summary.json says ``interrupted``; SIGKILL or a crash: no
summary at all, or a partial one) still has its journal and its memory log: what the
summary would have said comes from the journal (read only: a supervisor still running
keeps its lock and its writes). Only a directory with none of these is not a run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError
from oomguard.journal.store import JOURNAL_NAME, attempt_from_row

LIMIT = 200  # rows per table: the page stays readable (the files hold every row)


@dataclass
class RunArtifacts:
    summary: dict[str, Any]
    log: dict[str, list[float]]
    manifest: list[dict[str, Any]]  # batch attempts (the manifest's other entries are events)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False  # the run did not finish
    note: str = ""  # where the figures of an interrupted run came from


def read_log(path: Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    if not path.exists():
        return columns
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key is None:
                    continue
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    columns.setdefault(key, []).append(float("nan"))
    return columns


def _json(path: Path) -> Any:
    """A JSON file's value, or None where it is missing or was cut short."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _journal_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return []
    try:
        return list(db.execute(query))
    except sqlite3.Error:
        return []
    finally:
        db.close()


def from_journal(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """An interrupted run's summary: what summary.json had, completed from the journal."""
    journal = run_dir / JOURNAL_NAME
    meta = dict(_journal_rows(journal, "SELECT key, value FROM meta"))
    done = _journal_rows(journal, "SELECT COALESCE(SUM(count), 0) FROM commits")
    held = dict(_journal_rows(journal, "SELECT status, COUNT(*) FROM quarantine GROUP BY status"))
    rebuilt = dict(summary)
    rebuilt.setdefault("function", meta.get("function"))
    counts = dict(rebuilt.get("counts") or {})
    if done:
        counts["success"] = max(int(done[0][0]), int(counts.get("success", 0)))
    for status, number in held.items():
        counts[status] = max(int(number), int(counts.get(status, 0)))
    rebuilt["counts"] = counts
    rebuilt["quarantined"] = max(sum(held.values()), int(rebuilt.get("quarantined") or 0))
    rebuilt["status"] = "interrupted"
    return rebuilt


def attempts(run_dir: Path) -> list[dict[str, Any]]:
    entries = _json(run_dir / "ingest_manifest.json")
    if isinstance(entries, list):
        return [entry for entry in entries if isinstance(entry, dict) and "batch_id" in entry]
    rows = _journal_rows(run_dir / JOURNAL_NAME, "SELECT entry FROM attempts ORDER BY id")
    return [attempt_from_row(entry) for (entry,) in rows]


def quarantined(run_dir: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    path = run_dir / "quarantine.jsonl"
    if path.exists():
        with open(path) as handle:
            for line in handle:
                if len(entries) >= LIMIT:
                    break
                with contextlib.suppress(ValueError):  # a line cut short by a kill
                    entries.append(json.loads(line))
    if not entries:
        query = "SELECT idx, status, evidence FROM quarantine ORDER BY idx LIMIT 200"  # LIMIT
        for index, status, evidence in _journal_rows(run_dir / JOURNAL_NAME, query):
            entries.append(
                {"input_index": index, "status": status, "evidence": json.loads(evidence)}
            )
    return entries


def load_run(run_dir: Path) -> RunArtifacts:
    """Every artifact a report shows, from a finished or an interrupted run."""
    found = [n for n in ("summary.json", "memory_log.csv", JOURNAL_NAME) if (run_dir / n).exists()]
    if not found:
        raise ConfigError(
            f"{str(run_dir)!r} is not a run directory: it has no summary.json, memory_log.csv "
            "or journal.sqlite"
        )
    summary = _json(run_dir / "summary.json")
    log = read_log(run_dir / "memory_log.csv")
    interrupted = not isinstance(summary, dict) or summary.get("status") == "interrupted"
    note = ""
    if not isinstance(summary, dict):
        note = "summary.json is missing or incomplete (the supervisor was killed): figures from the journal and the memory log"
        summary = {}
    elif interrupted:
        note = "the run was stopped before the end; resume it to finish"
    if interrupted and (run_dir / JOURNAL_NAME).exists():
        summary = from_journal(run_dir, summary)
    if interrupted:
        summary.setdefault("status", "interrupted")
        cgroup = [v for v in log.get("cgroup_mb", []) if not math.isnan(v)]
        if cgroup and "peak_cgroup_mb" not in summary:
            summary["peak_cgroup_mb"] = round(max(cgroup), 1)
    return RunArtifacts(summary, log, attempts(run_dir), quarantined(run_dir), interrupted, note)
