"""``oomguard status RUN_DIR``: where a run stands, read from its journal (live or dead)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from oomguard.engine.quarantine import quarantine_reason
from oomguard.engine.sources import open_source
from oomguard.errors import ConfigError
from oomguard.journal.lock import supervisor_alive
from oomguard.journal.store import JOURNAL_NAME, Journal


def run_status(run_dir: Path, quarantine_limit: int = 20) -> dict[str, Any]:
    if not Journal.exists(run_dir):
        raise ConfigError(f"{str(run_dir)!r} is not an oomguard run directory (no journal)")
    journal = Journal(run_dir / JOURNAL_NAME, read_only=True)
    try:
        committed = journal.committed_count()
        quarantine = journal.quarantine_counts()
        source = journal.get_meta("source")
        total = None
        if source is not None and Path(source).exists():
            try:
                glob = (journal.get_meta("config") or {}).get("glob")
                with warnings.catch_warnings():  # the run itself warned of what it skips
                    warnings.simplefilter("ignore")
                    total = open_source(source, glob=glob).count()
            except (ConfigError, OSError):
                total = None
        done = committed + sum(quarantine.values())
        sessions = journal.sessions()
        status = {
            "run_dir": str(run_dir),
            "function": journal.get_meta("function"),
            "source": source,
            "sink": journal.get_meta("sink"),
            "total": total,
            "done": done,
            "remaining": total - done if total is not None else None,
            "counts": {"success": committed, **quarantine},
            "attempts": journal.attempt_counts(),
            "quarantined": list(journal.quarantined(limit=quarantine_limit)),
            "recent_events": journal.recent_events(10),
            "sessions": sessions,
            "supervisor": supervisor_alive(run_dir),
        }
    finally:
        journal.close()
    summary = run_dir / "summary.json"
    if summary.exists():
        status["last_summary"] = json.loads(summary.read_text())
    alive = status["supervisor"] is not None
    last = sessions[-1]["status"] if sessions else None
    status["state"] = (
        "running"
        if alive
        else ("finished" if last == "finished" and status["remaining"] in (0, None) else "stopped")
    )
    return status


def render_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    total = status["total"]
    progress = f"{status['done']}/{total}" if total is not None else f"{status['done']}"
    alive = status["supervisor"]
    who = f"running (supervisor pid {alive.get('pid')})" if alive else status["state"]
    console.print(f"[bold]{escape(status['run_dir'])}[/]: {who}; {progress} items done")
    console.print(
        f"function {escape(str(status['function']))}, input {escape(str(status['source']))}"
    )
    counts = ", ".join(f"{k} {v}" for k, v in status["counts"].items())
    console.print(f"counts: {counts}")
    if status["quarantined"]:
        table = Table(title="quarantined items")
        for column in ("input", "label", "status", "evidence"):
            table.add_column(column, overflow="fold")
        for entry in status["quarantined"]:
            why = quarantine_reason(entry)
            label = escape(str(entry.get("label", "")))
            table.add_row(str(entry["input_index"]), label, entry["status"], escape(why))
        console.print(table)
    for event in status["recent_events"][-5:]:
        console.print(f"[dim]event {escape(json.dumps(event, default=str))}[/]")
