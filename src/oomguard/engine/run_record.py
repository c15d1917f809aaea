"""What a run writes down: each attempt's manifest entry, the manifest, quantile summaries."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from oomguard.classify import Status
from oomguard.engine.artifacts import open_private
from oomguard.engine.handles import Attempt
from oomguard.engine.protocol import RSS_AFTER
from oomguard.journal.store import Journal
from oomguard.metrics.registry import Registry
from oomguard.sizes import mib


def attempt_entry(
    attempt: Attempt,
    pid: int,
    status: Status,
    peak: int | None,
    end: float,
    *,
    held: bool = False,
    error: dict[str, Any] | None = None,
    evidence: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
    bystander: bool = False,
    running: int | None = None,
) -> dict[str, Any]:
    """The manifest's entry for ``attempt`` (run by worker ``pid``) that ended at ``end``;
    ``held``: it ran in the side lane, held at a ceiling beside a runaway; ``running``:
    the item its worker was running when it died. Items are named by ``label`` (a single
    item's batch, each failed item, the running one) where they have one."""
    batch = attempt.batch
    start_wall = attempt.started_wall
    detail = error or evidence or {}
    entry: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "parent_id": batch.parent_id,
        "input_indices": batch.index_span(),  # a range is journaled as one (journal/store.py)
        "attempt": batch.attempt,
        "status": str(status),
        "start": round(start_wall, 3),
        "end": round(end, 3),
        "duration_sec": round(end - start_wall, 3),
        "peak_mb": mib(peak) if peak is not None else None,
        "start_mb": mib(attempt.baseline),
        "worker_pid": pid,
        "alone": attempt.alone,
        "side": held,
        "items_done": sum(map(len, attempt.results)),
    }
    if status is not Status.SUCCESS:
        entry["error_class"] = str(status)
        entry["error_message"] = detail.get("message") or detail.get("type") or death_text(detail)
    labels = batch.labels()
    if len(batch.items) == 1 and labels:
        entry["label"] = labels[batch.items[0].index]
    if attempt.item_failures:
        entry["items_failed"] = [
            _named({"input_index": failure.input_index, "status": failure.status}, labels)
            for failure in attempt.item_failures
        ]
    if running is not None:
        entry["running_item"] = _named({"input_index": running}, labels)
    if bystander:
        entry["bystander"] = True
    if stats:
        entry["worker_rss_mb"] = mib(stats.get(RSS_AFTER, 0))
        if "node" in stats:  # run on a cluster (oomguard.dask): which node
            entry["node"] = stats["node"]
    return entry


def _named(record: dict[str, Any], labels: dict[int, str]) -> dict[str, Any]:
    """``record`` with the label of its item, where it has one."""
    label = labels.get(record["input_index"])
    return record if label is None else {**record, "label": label}


def quantile_dict(registry: Registry, label: str, scale: float) -> dict[str, float] | None:
    if label not in registry.labels():
        return None
    out = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        value = registry.quantile(label, q)
        if value is not None:
            out[name] = round(value * scale, 4)
    return out


def write_manifest(journal: Journal, path: Path) -> None:
    """ingest_manifest.json: every attempt of every session, then every change of state
    (pause, resume, concurrency, recycle, OOM kill, backend restart...) as entries with an
    ``event`` key instead of a ``batch_id``; streamed from the journal."""
    tmp = path.with_suffix(".tmp")
    with open_private(tmp) as out:
        out.write("[")
        first = True
        for entry in itertools.chain(journal.attempts(), journal.events()):
            out.write("\n  " if first else ",\n  ")
            out.write(json.dumps(entry, default=str))
            first = False
        out.write("\n]\n")
    os.replace(tmp, path)


def death_text(evidence: dict[str, Any]) -> str:
    if "signal" in evidence:
        return f"killed by signal {evidence['signal']}"
    if evidence.get("returncode") is not None:
        return f"exited with code {evidence['returncode']}"
    return ""
