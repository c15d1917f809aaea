"""The files a run leaves in its run directory, in the formats of the OOM repro toolkit PDF-ingestion users run.

    memory_log.csv         one row per sample (default every 0.2 s)
    summary.json           peaks, duration, samples, cgroup events, counts per status
    ingest_manifest.json   one entry per batch attempt, then the events (from the journal)
    quarantine.jsonl       one line per quarantined item, with its evidence
    dmesg_excerpt.txt      the kernel's lines from the run's window, when readable

The run directory is 0700 and every file 0600: items and tracebacks may hold user data.
Files are opened through :mod:`oomguard.safe_files` (never through a symlink; a run
directory someone else could write is refused). Nothing here is held in memory for the
length of a run; entries are written as they happen.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from oomguard.memory.kernel_log import KernelLogTail, lines_between, read_kernel_log
from oomguard.safe_files import make_private_dir, open_private

__all__ = ["MemoryLog", "make_run_dir", "open_private", "write_dmesg_excerpt", "write_json"]


def make_run_dir(path: Path) -> Path:
    return make_private_dir(path)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open_private(tmp) as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")
    os.replace(tmp, path)


class MemoryLog:
    """memory_log.csv: fixed columns, one per worker slot."""

    def __init__(self, path: Path, worker_slots: int) -> None:
        self.path = path
        self._file = open_private(path)
        self._writer = csv.writer(self._file)
        self.columns = [
            "time",
            "elapsed_sec",
            "cgroup_mb",  # charged to the cap: page cache included
            "working_set_mb",  # charged less inactive file cache: what decisions use
            "rss_mb",
            "vms_mb",
            "supervisor_rss_mb",
            *(f"worker{slot}_rss_mb" for slot in range(worker_slots)),
            "in_flight",
            "mem_available_mb",
            "psi_some_avg10",
            "psi_full_avg10",
            "gpu_used_mb",
        ]
        self._writer.writerow(self.columns)
        self.rows = 0

    def write(self, row: list[Any]) -> None:
        self._writer.writerow(row)
        self.rows += 1
        if self.rows % 25 == 0:
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_dmesg_excerpt(
    path: Path, start: float, end: float, tail: KernelLogTail | None = None
) -> bool:
    """The kernel log lines of the window [start, end] (wall clock): what ``tail`` (opened
    at the start) read, else the window of the whole log; False if unreadable."""
    lines = tail.read() if tail is not None else None
    if lines is not None:
        window = lines
    else:
        whole = read_kernel_log()
        if whole is None:
            return False
        window = lines_between(whole, start, end)
    with open_private(path) as handle:
        for line in window:
            handle.write(f"[{line.uptime:12.6f}] {line.text}\n")
    return True
