"""Telling a person (or a log collector) how the run goes.

``rich``: a live progress bar on a terminal. ``plain``: a log line every few seconds.
``json``: the same as one JSON object per line. ``quiet``: nothing. ``auto`` picks rich
on a terminal and plain elsewhere.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from oomguard.sizes import format_size


@dataclass
class Snapshot:
    done: int
    total: int | None
    succeeded: int
    quarantined: int
    in_flight: int
    oom_kills: int
    memory_used: int
    memory_cap: int
    elapsed: float
    paused: str | None = None  # why intake is paused, once the pause is long enough to tell
    last_failed: str | None = None  # the last item quarantined: "item 12 (a.pdf) oom_killed"

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


class Progress(Protocol):
    def due(self) -> bool:
        """Whether an update now would show: the supervisor builds a snapshot only then."""

    def update(self, snapshot: Snapshot) -> None: ...

    def close(self, snapshot: Snapshot, *, finished: bool = True) -> None:
        """Stop; print a final report only if the run ``finished``."""


class QuietProgress:
    def due(self) -> bool:
        return False

    def update(self, snapshot: Snapshot) -> None:
        pass

    def close(self, snapshot: Snapshot, *, finished: bool = True) -> None:
        pass


class LineProgress:
    """A line every ``every`` seconds: plain text or JSON."""

    def __init__(self, as_json: bool, every: float = 5.0) -> None:
        self.as_json = as_json
        self.every = every
        self._last = 0.0

    def _emit(self, snapshot: Snapshot, event: str) -> None:
        if self.as_json:
            record: dict[str, Any] = {"event": event, "time": time.time(), **asdict(snapshot)}
            record["rate"] = round(snapshot.rate, 2)
            print(json.dumps(record), file=sys.stderr, flush=True)
            return
        total = f"/{snapshot.total}" if snapshot.total is not None else ""
        print(
            f"oomguard: {event}: {snapshot.done}{total} items, {snapshot.rate:.1f}/s, "
            f"working set {format_size(snapshot.memory_used)} of {format_size(snapshot.memory_cap)}, "
            f"in flight {snapshot.in_flight}, OOM kills {snapshot.oom_kills}, "
            f"quarantined {snapshot.quarantined}"
            + (f" (last: {snapshot.last_failed})" if snapshot.last_failed else "")
            + (f"; paused: {snapshot.paused}" if snapshot.paused else ""),
            file=sys.stderr,
            flush=True,
        )

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def update(self, snapshot: Snapshot) -> None:
        if self.due():
            self._last = time.monotonic()
            self._emit(snapshot, "progress")

    def close(self, snapshot: Snapshot, *, finished: bool = True) -> None:
        if finished:
            self._emit(snapshot, "finished")


class RichProgress:
    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("[bold]oomguard"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            transient=False,
        )
        self._task = self._bar.add_task("run", total=None, rate="0.0", detail="")
        self._bar.start()
        self._last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= 0.1

    def update(self, snapshot: Snapshot) -> None:
        if not self.due():
            return
        self._last = time.monotonic()
        detail = (
            f"mem {format_size(snapshot.memory_used)}/{format_size(snapshot.memory_cap)} "
            f"in flight {snapshot.in_flight} OOM {snapshot.oom_kills} "
            f"quarantined {snapshot.quarantined}"
            + (f" (last: {snapshot.last_failed})" if snapshot.last_failed else "")
            + (f" paused: {snapshot.paused}" if snapshot.paused else "")
        )
        from rich.markup import escape

        self._bar.update(
            self._task,
            completed=snapshot.done,
            total=snapshot.total,
            rate=f"{snapshot.rate:.1f}",
            detail=escape(detail),  # a label may hold "[...]"
        )

    def close(self, snapshot: Snapshot, *, finished: bool = True) -> None:
        if finished:
            self._last = 0.0
            self.update(snapshot)
        self._bar.stop()


def make_progress(log_format: str) -> Progress:
    if log_format == "auto":
        log_format = "rich" if sys.stderr.isatty() else "plain"
    if log_format == "rich":
        return RichProgress()
    if log_format in ("plain", "json"):
        return LineProgress(as_json=log_format == "json")
    return QuietProgress()
