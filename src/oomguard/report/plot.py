"""memory.png: the job's memory against its cap, with every OOM kill marked.

A "wall of OOM" is visible at a glance. Lines: the memory charged to the job's cgroup
(filled), its working set (what the kernel cannot simply drop), the RSS of the whole
process tree, and one thin line per worker (its own RSS). Needs matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from oomguard.engine.artifacts import open_private

FIGURE_INCHES = (12.0, 5.0)
DPI = 100
FIGURE_PIXELS = (int(FIGURE_INCHES[0] * DPI), int(FIGURE_INCHES[1] * DPI))
RED = "#c62828"


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


def _memory_lines(ax: Any, log: dict[str, list[float]]) -> None:
    elapsed = log.get("elapsed_sec", [])
    if "cgroup_mb" in log:
        ax.fill_between(elapsed, log["cgroup_mb"], color="#90caf9", alpha=0.5, linewidth=0)
        ax.plot(
            elapsed,
            log["cgroup_mb"],
            color="#1565c0",
            linewidth=1.8,
            label="charged to the cap (page cache included)",
        )
    if "working_set_mb" in log:
        ax.plot(
            elapsed,
            log["working_set_mb"],
            color="#00695c",
            linewidth=1.2,
            linestyle="--",
            label="working set (charged less cache the kernel can drop)",
        )
    if "rss_mb" in log:
        ax.plot(
            elapsed, log["rss_mb"], color="#37474f", linewidth=1.2, label="RSS of the process tree"
        )
    workers = sorted(k for k in log if k.startswith("worker") and k.endswith("_rss_mb"))
    for number, key in enumerate(workers):
        label = f"each worker's own RSS ({len(workers)} thin lines)" if number == 0 else None
        ax.plot(elapsed, log[key], linewidth=0.6, alpha=0.6, label=label)


def _cap_and_kills(
    ax: Any,
    summary: dict[str, Any],
    kills: list[float],
    peaks: list[tuple[float, float]],
    start: float,
) -> None:
    cap = summary.get("cap_mb")
    if cap:
        ax.axhline(cap, color=RED, linewidth=1.5, linestyle="--", label=f"cap {cap:.0f} MiB")
        ax.axhline(
            0.95 * cap, color=RED, linewidth=0.8, linestyle=":", alpha=0.7, label="95% of the cap"
        )
    for number, when in enumerate(kills):
        ax.axvline(
            when - start,
            color=RED,
            linewidth=1.0,
            alpha=0.8,
            label="OOM kill" if number == 0 else None,
        )
    if peaks:
        ax.scatter(
            [t - start for t, _ in peaks], [p for _, p in peaks],
            marker="x", s=60, color="#b71c1c", zorder=5, label="peak at the kill",
        )  # fmt: skip
    marked = False
    for event in summary.get("events", []):
        if event.get("event") in ("pause", "resume", "backend_restart") and "time" in event:
            ax.axvline(
                event["time"] - start, color="#ff8f00", linewidth=0.8, linestyle="-.", alpha=0.7,
                label=None if marked else "pause / resume / backend restart",
            )  # fmt: skip
            marked = True


def _frame(
    ax: Any, log: dict[str, list[float]], summary: dict[str, Any], kills: list[float]
) -> None:
    cap = summary.get("cap_mb")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("MiB")
    highest = max([cap or 0, *[v for v in log.get("cgroup_mb", []) if not math.isnan(v)], 1])
    ax.set_ylim(bottom=0, top=highest * 1.12)
    ax.grid(True, alpha=0.25)
    title = f"{len(kills)} OOM kill(s); peak {summary.get('peak_cgroup_mb', '?')} MiB"
    if cap:
        title += f" of a {cap:.0f} MiB cap ({summary.get('peak_percent_of_cap', '?')}%)"
    if summary.get("status") == "interrupted":
        title += " (interrupted)"
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:  # a run killed at once may have no samples
        ax.legend(loc="upper left", fontsize=9, framealpha=0.9)


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

    start = log["time"][0] if log.get("time") else 0.0
    fig, ax = plt.subplots(figsize=FIGURE_INCHES, dpi=DPI)
    _memory_lines(ax, log)
    _cap_and_kills(ax, summary, kills, peaks, start)
    _frame(ax, log, summary, kills)
    fig.tight_layout()
    with open_private(target, "wb") as handle:  # never through a planted link
        fig.savefig(handle, dpi=DPI, format="png")
    plt.close(fig)
