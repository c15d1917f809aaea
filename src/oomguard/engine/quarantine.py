"""A quarantined item as it is written down (quarantine.jsonl) and as it is told to a person."""

from __future__ import annotations

import json
from typing import Any


def quarantine_line(entry: dict[str, Any]) -> str:
    """One line of quarantine.jsonl: ``{"input_index", "label", "status", "evidence"}``
    (``label`` where the item has one), newline included."""
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


def item_name(index: int, label: str | None, *, limit: int = 60) -> str:
    """An item as a person reads it: ``item 12 (scans/big.pdf)``, or ``item 12`` unnamed
    (a long label keeps its end, where a path's file name is)."""
    if label is None:
        return f"item {index}"
    if len(label) > limit:
        label = "…" + label[-(limit - 1) :]
    return f"item {index} ({label})"
