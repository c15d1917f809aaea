"""A quarantined item as it is written down (quarantine.jsonl) and as it is told to a person."""

from __future__ import annotations

import json
from typing import Any


def quarantine_line(entry: dict[str, Any]) -> str:
    """One line of quarantine.jsonl: ``{"input_index", "status", "evidence"}`` (and any
    other keys the entry has), newline included."""
    return json.dumps(entry, default=str) + "\n"


def quarantine_reason(entry: dict[str, Any], *, limit: int = 120) -> str:
    """Why an item is quarantined, in a few words: the error's message, or where the
    kernel killed it."""
    evidence = entry.get("evidence") or {}
    if entry.get("status") == "oom_killed":
        cap = evidence.get("job_cap_mb")
        of = f" of {cap} MiB" if cap is not None else ""
        return f"killed at {evidence.get('peak_mb')} MiB{of}"
    why = evidence.get("message") or evidence.get("type")
    if why:
        return str(why)
    return json.dumps(evidence, default=str)[:limit]
