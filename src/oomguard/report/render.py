"""Turn a run directory (``oomguard run`` or ``oomguard repro``) into report.html + memory.png.

The page is self-contained (the image is embedded), so it can be attached to a bug report
or opened from a zip. Its banner's colour is the outcome: green when everything was done,
amber when items were quarantined for errors of their own (or the run was interrupted),
red when the kernel OOM-killed anything. Reading the artifacts is report/load.py's, the
curve report/plot.py's, a cluster run's nodes report/nodes.py's. Needs matplotlib (``pip install 'oomguard[report]'``).
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from oomguard.engine.artifacts import open_private
from oomguard.errors import ConfigError
from oomguard.report.load import LIMIT, RunArtifacts, load_run
from oomguard.report.nodes import cluster_nodes, node_cell, nodes_section
from oomguard.report.plot import kill_peaks, kill_times, plot

STATUS_COLOURS = {
    "success": "#2e7d32",
    "oom_killed": "#c62828",
    "memory_error": "#ef6c00",
    "timeout": "#6a1b9a",
    "worker_crash": "#4e342e",
    "error": "#1565c0",
    "backend_failure": "#00838f",
}
MEMORY_DEATHS = ("oom_killed", "memory_error")
FIGURES = (
    "RSS is the memory each process's pages occupy (summed over the tree); charged is what the "
    "kernel bills the job's cgroup, page cache included, and the cap applies to it; the "
    "working set is charged less the inactive file cache the kernel drops before it kills "
    "anything, and it is what oomguard's decisions (admission, pauses) use."
)
WORKER_LINES = (
    "In the curve, each thin line is one worker slot's own RSS (worker0, worker1, …); a line "
    "that falls to zero and climbs again is a worker replaced after it died or was recycled."
)

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1240px;color:#212121;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem} .verdict{font-size:1.1rem;padding:.8rem 1rem;border-radius:6px;margin:1rem 0}
.bad{background:#ffebee;border-left:5px solid #c62828}.good{background:#e8f5e9;border-left:5px solid #2e7d32}
.warn{background:#fff8e1;border-left:5px solid #ff8f00}
.cards{display:flex;gap:.8rem;flex-wrap:wrap;margin:1rem 0}.card{background:#f5f5f5;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.3rem}.card span{color:#616161;font-size:.85rem}
img{width:100%;border:1px solid #e0e0e0;border-radius:6px} .explain{color:#424242;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eee;vertical-align:top}
th{background:#fafafa}.pill{color:#fff;border-radius:10px;padding:.05rem .5rem;font-size:.8rem}
code{background:#f5f5f5;padding:.1rem .3rem;border-radius:3px;word-break:break-all}
.label{color:#616161}
"""


def _pill(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#757575")
    return f'<span class="pill" style="background:{colour}">{html.escape(status)}</span>'


def _item(index: Any, label: Any = None) -> str:
    """An item as a person reads it: its input index, and its label where it has one."""
    text = html.escape(str(index))
    if label not in (None, ""):
        text += f' <span class="label">{html.escape(str(label))}</span>'
    return text


def outcome(art: RunArtifacts, kills: list[float]) -> str:
    """The banner's class: ``bad`` (red) for OOM kills or a failed run, ``warn`` (amber)
    for items quarantined by their own errors or an interrupted run, else ``good``."""
    summary = art.summary
    counts = summary.get("counts") or {}
    if (
        kills
        or summary.get("oom_killed")
        or summary.get("status") == "failed"
        or any(counts.get(status) for status in MEMORY_DEATHS)
        or any(entry.get("status") in MEMORY_DEATHS for entry in art.quarantine)
        or any(attempt.get("status") in MEMORY_DEATHS for attempt in art.manifest)
    ):
        return "bad"
    if art.interrupted or summary.get("quarantined") or art.quarantine:
        return "warn"
    if "counts" not in summary and summary.get("exit_code") not in (None, 0):
        return "bad"  # a repro whose command failed
    return "good"


def failed_items(attempt: dict[str, Any]) -> list[tuple[Any, Any]]:
    """``(input index, label)`` of the items an attempt failed on: those it reported, or
    the one that was running when it died (the first not done), not the whole batch."""
    indices = attempt.get("input_indices") or []
    labels = attempt.get("labels") or [None] * len(indices)
    by_index = dict(zip(indices, labels, strict=False))
    if attempt.get("items_failed"):
        return [
            (f["input_index"], f.get("label", by_index.get(f["input_index"])))
            for f in attempt["items_failed"]
        ]
    done = int(attempt.get("items_done") or 0)
    if done < len(indices):
        return [(indices[done], labels[done] if done < len(labels) else None)]
    return []


def _batch_text(attempt: dict[str, Any]) -> str:
    indices = attempt.get("input_indices") or []
    if len(indices) <= 1:
        return "alone"
    return f"in batch {attempt.get('batch_id')} of {len(indices)} ({indices[0]}…{indices[-1]})"


def _failures_table(
    manifest: list[dict[str, Any]], nodes: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """The failed attempts; ``nodes`` (a cluster run's): a column with the node of each."""
    failures = [a for a in manifest if a.get("status") != "success" or a.get("items_failed")]
    if not failures:
        return []
    node_th = "<th>node</th>" if nodes else ""
    parts = [
        "<h2>Failed attempts</h2><table><tr><th>failed item</th><th>batch</th><th>attempt</th>"
        f"{node_th}<th>status</th><th>peak MiB</th><th>what happened</th></tr>"
    ]
    for a in failures[:LIMIT]:
        items = ", ".join(_item(i, label) for i, label in failed_items(a)) or "?"
        flags = f"{' bystander' if a.get('bystander') else ''}{' alone' if a.get('alone') else ''}"
        node_td = f"<td>{node_cell(a.get('node'), nodes)}</td>" if nodes else ""
        parts.append(
            f"<tr><td>{items}</td><td>{html.escape(_batch_text(a))}</td><td>{a.get('attempt')}</td>"
            f"{node_td}<td>{_pill(a.get('status', '?'))}{flags}</td><td>{a.get('peak_mb')}</td>"
            f"<td>{html.escape(str(a.get('error_message') or ''))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _attempts_table(
    manifest: list[dict[str, Any]], nodes: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    if not manifest:
        return []
    by_status: dict[str, int] = {}
    for attempt in manifest:
        by_status[attempt.get("status", "?")] = by_status.get(attempt.get("status", "?"), 0) + 1
    parts = ["<h2>Batch attempts by status</h2><table><tr><th>status</th><th>attempts</th></tr>"]
    parts += [f"<tr><td>{_pill(s)}</td><td>{n}</td></tr>" for s, n in sorted(by_status.items())]
    parts.append("</table>")
    return parts + _failures_table(manifest, nodes)


def _quarantine_table(
    entries: list[dict[str, Any]], nodes: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """The quarantined items; ``nodes`` (a cluster run's): a column with the node of each."""
    if not entries:
        return []
    node_th = "<th>node</th>" if nodes else ""
    parts = [
        f"<h2>Quarantined items</h2><table><tr><th>item</th>{node_th}<th>status</th>"
        "<th>evidence</th></tr>"
    ]
    for entry in entries:
        evidence = entry.get("evidence", {})
        cap = evidence.get("job_cap_mb", evidence.get("node_cap_mb"))
        why = evidence.get("message") or (
            f"killed at {evidence.get('peak_mb')} MiB of a {cap} MiB cap"
            if entry.get("status") == "oom_killed"
            else json.dumps(evidence)[:200]
        )
        node_td = f"<td>{node_cell(evidence.get('node'), nodes)}</td>" if nodes else ""
        parts.append(
            f"<tr><td>{_item(entry.get('input_index'), entry.get('label'))}</td>{node_td}"
            f"<td>{_pill(entry.get('status', '?'))}</td><td>{html.escape(str(why))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _cards(summary: dict[str, Any], kills: list[float]) -> list[str]:
    cards = [
        (f"{summary.get('peak_cgroup_mb', '?')} MiB", "peak charged to the cap"),
        (f"{summary.get('cap_mb', '?')} MiB", "cap"),
        (f"{summary.get('peak_percent_of_cap', '?')}%", "peak of the cap"),
        (f"{summary.get('peak_rss_mb', '?')} MiB", "peak RSS"),
        (f"{len(kills)}", "OOM kills"),
        (f"{summary.get('duration_sec', '?')} s", "duration"),
    ]
    if summary.get("peak_working_set_mb") is not None:
        cards.insert(1, (f"{summary['peak_working_set_mb']} MiB", "peak working set"))
    counts = summary.get("counts")
    if counts:
        cards.append((f"{counts.get('success', 0)}", "items done"))
        cards.append((f"{summary.get('quarantined', 0)}", "quarantined"))
    return [
        '<div class="cards">',
        *(
            f'<div class="card"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
            for v, k in cards
        ),
        "</div>",
    ]


def _head(art: RunArtifacts, kills: list[float]) -> list[str]:
    summary = art.summary
    what = summary.get("function") or " ".join(summary.get("command", [])) or "?"
    verdict = summary.get("verdict") or _verdict(summary, kills)
    if art.interrupted:
        verdict = f"Interrupted: {verdict}. {art.note}."
    return [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>oomguard report: {html.escape(what)}</title><style>{CSS}</style></head><body>",
        f"<h1>oomguard report</h1><div><code>{html.escape(what)}</code></div>",
        f'<div class="verdict {outcome(art, kills)}">{html.escape(verdict)}</div>',
    ]


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` and ``memory.png`` into ``run_dir``; returns the page's path."""
    run_dir = Path(run_dir)
    art = load_run(run_dir)
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ConfigError("the report needs matplotlib: pip install 'oomguard[report]'") from err
    summary, manifest = art.summary, art.manifest
    nodes = cluster_nodes(summary)
    kills = kill_times(summary, manifest)
    png = run_dir / "memory.png"
    plot(art.log, summary, kills, kill_peaks(summary, manifest), png)
    os.chmod(png, 0o600)
    image = base64.b64encode(png.read_bytes()).decode()
    parts = [
        *_head(art, kills),
        *_cards(summary, kills),
        f'<img alt="memory over time against the cap" src="data:image/png;base64,{image}">',
        f'<p class="explain">{FIGURES}</p><p class="explain">{WORKER_LINES}</p>',
        *nodes_section(summary),
        *_attempts_table(manifest, nodes),
        *_quarantine_table(art.quarantine, nodes),
        f"<p style='color:#757575;font-size:.85rem'>Enforced by {html.escape(str(summary.get('enforcement')))}; "
        f"{summary.get('samples', '?')} samples. Files: memory_log.csv, summary.json"
        f"{', ingest_manifest.json' if manifest else ''}, dmesg_excerpt.txt.</p></body></html>",
    ]
    page = run_dir / "report.html"
    with open_private(page) as handle:
        handle.write("\n".join(parts))
    return page


def _verdict(summary: dict[str, Any], kills: list[float]) -> str:
    if "counts" in summary:
        return (
            f"{summary['counts'].get('success', 0)} items done, {summary.get('quarantined', 0)} quarantined, "
            f"{len(kills)} OOM kill(s) survived; peak {summary.get('peak_cgroup_mb')} MiB of a "
            f"{summary.get('cap_mb')} MiB cap ({summary.get('peak_percent_of_cap')}%)"
        )
    state = (
        "OOM-killed"
        if summary.get("oom_killed")
        else f"exited with code {summary.get('exit_code')}"
    )
    return (
        f"The command {state} after {summary.get('duration_sec')} s; peak {summary.get('peak_cgroup_mb')} MiB "
        f"of a {summary.get('cap_mb')} MiB cap; peak RSS {summary.get('peak_rss_mb')} MiB"
    )
