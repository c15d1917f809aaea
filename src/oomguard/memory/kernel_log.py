"""The kernel log (dmesg): is it readable, and which lines record OOM kills.

Reading needs root or ``kernel.dmesg_restrict=0``; where it is unreadable oomguard
still knows of kills from cgroup counters, it only lacks the kernel's own words.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
_KILLED = re.compile(
    r"(?:Memory cgroup out of memory|Out of memory).*?Killed process (\d+) \(([^)]*)\)"
    r".*?anon-rss:(\d+)kB"
)
_CONSTRAINT = re.compile(r"oom-kill:.*?oom_memcg=([^,]*),task_memcg=([^,]*),task=([^,]*),pid=(\d+)")


@dataclass(frozen=True)
class KernelLine:
    uptime: float  # seconds since boot, as the kernel stamps it
    text: str


@dataclass(frozen=True)
class KernelOomKill:
    pid: int
    command: str
    anon_rss: int  # bytes
    uptime: float
    task_memcg: str | None  # the victim's cgroup, as the kernel names it
    oom_memcg: str | None  # the cgroup that was out of memory
    lines: tuple[str, ...]


def _read_records(fd: int) -> list[KernelLine] | None:
    """Records from an open /dev/kmsg up to the end of the buffer (None: a read failed).

    Records are ``PRIO,SEQ,USEC,FLAGS;TEXT`` (Documentation/ABI/testing/dev-kmsg);
    USEC is the same clock as dmesg's stamps. Continuation lines (``KEY=VALUE`` after a
    newline) are dropped, as dmesg does by default.
    """
    lines = []
    while True:
        try:
            record = os.read(fd, 8192)
        except BlockingIOError:
            break  # the end of the buffer
        except BrokenPipeError:
            continue  # this record was overwritten while we read: the next one
        except OSError:
            return None
        if not record:
            break
        header, _, rest = record.partition(b";")
        fields = header.split(b",")
        if len(fields) < 3:
            continue
        try:
            stamp = int(fields[2]) / 1_000_000
        except ValueError:
            continue
        text = rest.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        lines.append(KernelLine(stamp, text))
    return lines


def read_kmsg(path: str = "/dev/kmsg") -> list[KernelLine] | None:
    """The whole ring buffer through /dev/kmsg: one record per read(), no process to start."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_records(fd)
    finally:
        os.close(fd)


class KernelLogTail:
    """What the kernel logs from now on: /dev/kmsg opened at its end and read as it grows.

    A run reads only its own lines (a whole ring buffer is thousands of records, read one
    per system call) each time a worker dies, and again for its excerpt at the end. Where
    /dev/kmsg cannot be read, ``read`` returns None and callers read the whole log
    (``read_kernel_log``) instead. At most ``keep`` lines are kept, the latest.
    """

    def __init__(self, path: str = "/dev/kmsg", keep: int = 20_000) -> None:
        self.lines: collections.deque[KernelLine] = collections.deque(maxlen=keep)
        self._fd: int | None = None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            return
        self._fd = fd

    def read(self) -> list[KernelLine] | None:
        """Every line logged since this tail was opened (the latest ``keep``), or None."""
        if self._fd is None:
            return None
        new = _read_records(self._fd)
        if new is None:
            return None
        self.lines.extend(new)
        return list(self.lines)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_kernel_log(timeout: float = 5.0) -> list[KernelLine] | None:
    """The kernel ring buffer, or ``None`` where it cannot be read (/dev/kmsg, else dmesg)."""
    lines = read_kmsg()
    if lines is not None:
        return lines
    dmesg = shutil.which("dmesg")
    if dmesg is None:
        return None
    try:
        result = subprocess.run(
            [dmesg], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_kernel_log(result.stdout)


def parse_kernel_log(text: str) -> list[KernelLine]:
    lines = []
    for raw in text.splitlines():
        match = _STAMP.match(raw)
        if match:
            lines.append(KernelLine(float(match.group(1)), match.group(2)))
    return lines


def uptime() -> float:
    """Seconds since boot, the clock of the kernel log."""
    return float(Path("/proc/uptime").read_text().split()[0])


def wall_to_uptime(wall_time: float) -> float:
    return uptime() - (time.time() - wall_time)


def lines_between(lines: list[KernelLine], start_wall: float, end_wall: float) -> list[KernelLine]:
    """The lines stamped within a wall-clock window (with a second of slack either side)."""
    start, end = wall_to_uptime(start_wall) - 1.0, wall_to_uptime(end_wall) + 1.0
    return [line for line in lines if start <= line.uptime <= end]


def find_oom_kills(lines: list[KernelLine]) -> list[KernelOomKill]:
    """Each kill the log records, with its context line (``oom-kill:constraint=...``)."""
    kills: list[KernelOomKill] = []
    context: tuple[str | None, str | None, KernelLine | None] = (None, None, None)
    for line in lines:
        constraint = _CONSTRAINT.search(line.text)
        if constraint:
            context = (constraint.group(1), constraint.group(2), line)
            continue
        killed = _KILLED.search(line.text)
        if killed:
            oom_memcg, task_memcg, context_line = context
            evidence = tuple(
                text for text in ((context_line.text if context_line else None), line.text) if text
            )
            kills.append(
                KernelOomKill(
                    pid=int(killed.group(1)),
                    command=killed.group(2),
                    anon_rss=int(killed.group(3)) * 1024,
                    uptime=line.uptime,
                    task_memcg=task_memcg,
                    oom_memcg=oom_memcg,
                    lines=evidence,
                )
            )
            context = (None, None, None)
    return kills


def kill_report(recent: list[KernelLine] | None, pid: int, last: int = 2000) -> list[str]:
    """The kernel's lines on the OOM kill of ``pid``: searched in ``recent`` (a run's own
    tail of /dev/kmsg, None where it cannot be read) or else in the whole kernel log; the
    latest ``last`` lines only. Empty when the kernel reported no such kill."""
    lines = recent if recent is not None else read_kernel_log()
    if lines is None:
        return []
    for kill in reversed(find_oom_kills(lines[-last:])):
        if kill.pid == pid:
            return list(kill.lines)
    return []
