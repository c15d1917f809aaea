"""Turn a run directory (``oomguard run`` or ``oomguard repro``) into report.html + memory.png.

The page is self-contained (the image is embedded), so it can be attached to a bug report
or opened from a zip. The curve shows memory against the cap, with every OOM kill marked:
a "wall of OOM" is visible at a glance. Needs matplotlib
(``pip install 'oomguard[report]'``).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from oomguard.engine.artifacts import open_private
from oomguard.errors import ConfigError

FIGURE_INCHES = (12.0, 5.0)
DPI = 100
FIGURE_PIXELS = (int(FIGURE_INCHES[0] * DPI), int(FIGURE_INCHES[1] * DPI))
STATUS_COLOURS = {
    "success": "#2e7d32",
    "oom_killed": "#c62828",
    "memory_error": "#ef6c00",
    "timeout": "#6a1b9a",
    "worker_crash": "#4e342e",
    "error": "#1565c0",
    "backend_failure": "#00838f",
}


def read_log(path: Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
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


def kill_times(summary: dict[str, Any], manifest: list[dict[str, Any]]) -> list[float]:
    """Wall-clock times of OOM kills, from whichever artifact recorded them."""
    times = list(summary.get("oom_kill_times") or [])
    times += [
        e["time"] for e in summary.get("events", []) if e.get("event") == "oom_kill" and "time" in e
    ]
    if not times:
        times = [a["end"] for a in manifest if a.get("status") == "oom_killed" and "end" in a]
    return sorted(set(times))


def kill_peaks(
    summary: dict[str, Any], manifest: list[dict[str, Any]]
) -> list[tuple[float, float]]:
    """(time, MiB) of each kill whose peak is known: the sampled curve can miss the top."""
    points = [
        (a["end"], a["peak_mb"])
        for a in manifest
        if a.get("status") == "oom_killed" and a.get("end") and a.get("peak_mb")
    ]
    if not points and summary.get("oom_killed") and summary.get("oom_kill_times"):
        points = [(summary["oom_kill_times"][0], summary.get("peak_cgroup_mb") or 0)]
    return points


def plot(
    log: dict[str, list[float]],
    summary: dict[str, Any],
    kills: list[float],
    peaks: list[tuple[float, float]],
    target: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    elapsed = log.get("elapsed_sec", [])
    start = log["time"][0] if log.get("time") else 0.0
    fig, ax = plt.subplots(figsize=FIGURE_INCHES, dpi=DPI)
    if "cgroup_mb" in log:
        ax.fill_between(elapsed, log["cgroup_mb"], color="#90caf9", alpha=0.5, linewidth=0)
        ax.plot(
            elapsed,
            log["cgroup_mb"],
            color="#1565c0",
            linewidth=1.8,
            label="cgroup (charged to the cap)",
        )
    if "rss_mb" in log:
        ax.plot(
            elapsed,
            log["rss_mb"],
            color="#37474f",
            linewidth=1.2,
            linestyle="-",
            label="RSS of the process tree",
        )
    for key in sorted(k for k in log if k.startswith("worker") and k.endswith("_rss_mb")):
        ax.plot(elapsed, log[key], linewidth=0.6, alpha=0.6)
    cap = summary.get("cap_mb")
    if cap:
        ax.axhline(cap, color="#c62828", linewidth=1.5, linestyle="--", label=f"cap {cap:.0f} MiB")
        ax.axhline(
            0.95 * cap,
            color="#c62828",
            linewidth=0.8,
            linestyle=":",
            alpha=0.7,
            label="95% of the cap",
        )
    for number, when in enumerate(kills):
        ax.axvline(
            when - start,
            color="#c62828",
            linewidth=1.0,
            alpha=0.8,
            label="OOM kill" if number == 0 else None,
        )
    if peaks:
        ax.scatter(
            [t - start for t, _ in peaks],
            [p for _, p in peaks],
            marker="x",
            s=60,
            color="#b71c1c",
            zorder=5,
            label="peak at the kill",
        )
    for event in summary.get("events", []):
        if event.get("event") in ("pause", "resume", "backend_restart") and "time" in event:
            ax.axvline(
                event["time"] - start, color="#ff8f00", linewidth=0.8, linestyle="-.", alpha=0.7
            )
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("MiB")
    highest = max([cap or 0, *[v for v in log.get("cgroup_mb", []) if not math.isnan(v)], 1])
    ax.set_ylim(bottom=0, top=highest * 1.12)
    ax.grid(True, alpha=0.25)
    title = f"{len(kills)} OOM kill(s); peak {summary.get('peak_cgroup_mb', '?')} MiB"
    if cap:
        title += f" of a {cap:.0f} MiB cap ({summary.get('peak_percent_of_cap', '?')}%)"
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    with open_private(target, "wb") as handle:  # never through a planted link
        fig.savefig(handle, dpi=DPI, format="png")
    plt.close(fig)


CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1240px;color:#212121;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem} .verdict{font-size:1.1rem;padding:.8rem 1rem;border-radius:6px;margin:1rem 0}
.bad{background:#ffebee;border-left:5px solid #c62828}.good{background:#e8f5e9;border-left:5px solid #2e7d32}
.cards{display:flex;gap:.8rem;flex-wrap:wrap;margin:1rem 0}.card{background:#f5f5f5;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.3rem}.card span{color:#616161;font-size:.85rem}
img{width:100%;border:1px solid #e0e0e0;border-radius:6px}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eee;vertical-align:top}
th{background:#fafafa}.pill{color:#fff;border-radius:10px;padding:.05rem .5rem;font-size:.8rem}
code{background:#f5f5f5;padding:.1rem .3rem;border-radius:3px;word-break:break-all}
"""


def _pill(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#757575")
    return f'<span class="pill" style="background:{colour}">{html.escape(status)}</span>'


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` and ``memory.png`` into ``run_dir``; returns the page's path."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    log_path = run_dir / "memory_log.csv"
    if not summary_path.exists() or not log_path.exists():
        raise ConfigError(
            f"{str(run_dir)!r} is not a run directory: summary.json and memory_log.csv are needed"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ConfigError("the report needs matplotlib: pip install 'oomguard[report]'") from err
    summary = json.loads(summary_path.read_text())
    manifest_path = run_dir / "ingest_manifest.json"
    entries: list[dict[str, Any]] = (
        json.loads(manifest_path.read_text()) if manifest_path.exists() else []
    )
    manifest = [entry for entry in entries if "batch_id" in entry]  # the rest are events
    kills = kill_times(summary, manifest)
    png = run_dir / "memory.png"
    plot(read_log(log_path), summary, kills, kill_peaks(summary, manifest), png)
    os.chmod(png, 0o600)
    image = base64.b64encode(png.read_bytes()).decode()

    what = summary.get("function") or " ".join(summary.get("command", []))
    failed = bool(kills) or summary.get("quarantined") or summary.get("status") == "failed"
    verdict = summary.get("verdict") or _verdict(summary, kills)
    cards = [
        (f"{summary.get('peak_cgroup_mb', '?')} MiB", "peak charged to the cap"),
        (f"{summary.get('cap_mb', '?')} MiB", "cap"),
        (f"{summary.get('peak_percent_of_cap', '?')}%", "peak of the cap"),
        (f"{summary.get('peak_rss_mb', '?')} MiB", "peak RSS"),
        (f"{len(kills)}", "OOM kills"),
        (f"{summary.get('duration_sec', '?')} s", "duration"),
    ]
    counts = summary.get("counts")
    if counts:
        cards.append((f"{counts.get('success', 0)}", "items done"))
        cards.append((f"{summary.get('quarantined', 0)}", "quarantined"))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>oomguard report: {html.escape(what)}</title><style>{CSS}</style></head><body>",
        f"<h1>oomguard report</h1><div><code>{html.escape(what)}</code></div>",
        f'<div class="verdict {"bad" if failed else "good"}">{html.escape(verdict)}</div>',
        '<div class="cards">',
        *(
            f'<div class="card"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
            for v, k in cards
        ),
        "</div>",
        f'<img alt="memory over time against the cap" src="data:image/png;base64,{image}">',
    ]
    if manifest:
        by_status: dict[str, int] = {}
        for attempt in manifest:
            by_status[attempt.get("status", "?")] = by_status.get(attempt.get("status", "?"), 0) + 1
        parts.append(
            "<h2>Batch attempts by status</h2><table><tr><th>status</th><th>attempts</th></tr>"
        )
        parts += [f"<tr><td>{_pill(s)}</td><td>{n}</td></tr>" for s, n in sorted(by_status.items())]
        parts.append("</table>")
        failures = [a for a in manifest if a.get("status") != "success"][:200]
        if failures:
            parts.append(
                "<h2>Failed attempts</h2><table><tr><th>batch</th><th>items</th><th>attempt</th>"
                "<th>status</th><th>peak MiB</th><th>what happened</th></tr>"
            )
            for a in failures:
                items = a.get("input_indices", [])
                shown = ", ".join(map(str, items[:12])) + (" …" if len(items) > 12 else "")
                parts.append(
                    f"<tr><td>{a.get('batch_id')}</td><td>{html.escape(shown)}</td><td>{a.get('attempt')}</td>"
                    f"<td>{_pill(a.get('status', '?'))}{' bystander' if a.get('bystander') else ''}"
                    f"{' alone' if a.get('alone') else ''}</td><td>{a.get('peak_mb')}</td>"
                    f"<td>{html.escape(str(a.get('error_message') or ''))}</td></tr>"
                )
            parts.append("</table>")
    quarantine = run_dir / "quarantine.jsonl"
    if quarantine.exists() and quarantine.stat().st_size:
        parts.append(
            "<h2>Quarantined items</h2><table><tr><th>item</th><th>status</th><th>evidence</th></tr>"
        )
        with open(quarantine) as handle:
            for number, line in enumerate(handle):
                if number >= 200:
                    break
                entry = json.loads(line)
                evidence = entry.get("evidence", {})
                why = evidence.get("message") or (
                    f"killed at {evidence.get('peak_mb')} MiB of a {evidence.get('job_cap_mb')} MiB cap"
                    if entry.get("status") == "oom_killed"
                    else json.dumps(evidence)[:200]
                )
                parts.append(
                    f"<tr><td>{entry.get('input_index')}</td><td>{_pill(entry.get('status', '?'))}</td>"
                    f"<td>{html.escape(str(why))}</td></tr>"
                )
        parts.append("</table>")
    parts.append(
        f"<p style='color:#757575;font-size:.85rem'>Enforced by {html.escape(str(summary.get('enforcement')))}; "
        f"{summary.get('samples', '?')} samples. Files: memory_log.csv, summary.json"
        f"{', ingest_manifest.json' if manifest else ''}, dmesg_excerpt.txt.</p></body></html>"
    )
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
