"""A group's peak memory per batch, on every kernel.

The engine resets a worker's peak when a batch starts and reads it when the batch ends;
the batch's cost is that peak less the worker's memory at its start, and admission
learns from it. What the kernels offer:

==================  ===========================================================
cgroup v1           ``memory.max_usage_in_bytes``, reset by writing 0: exact
v2, Linux 6.12+     ``memory.peak``, reset by a write to an open descriptor (seen
                    through that descriptor only): exact
v2, 5.19 to 6.11    ``memory.peak`` is the group's lifetime peak; it cannot be reset
v2, before 5.19     no ``memory.peak`` at all
==================  ===========================================================

Where the kernel cannot reset the peak, :class:`BatchPeak` follows the batch itself:

* where the lifetime ``memory.peak`` rose during the batch, it *is* the batch's peak
  (the batch reached the new high; nothing before it was higher): exact;
* otherwise the highest ``memory.current`` read since the batch began (every read counts:
  the monitor samples each worker every 0.2 s, the supervisor reads them every loop turn
  while it watches for runaways), and
* the usage at the start plus the growth of the group's processes' peak RSS (``VmHWM``,
  reset per batch by writing 5 to ``/proc/PID/clear_refs``, Linux 4.0+): this catches an
  item that allocated and freed between two reads, which samples alone miss;
* never above the lifetime peak, where there is one.

Measured on Debian 12's 6.1 (the v2 lane, BENCHMARKS.md): per-item costs learned this way
match those learned on cgroup v1 for the same items.
"""

from __future__ import annotations

import os
import threading
from typing import Literal

PeakMethod = Literal["v1-reset", "v2-reset", "v2-lifetime", "v2-none"]

PEAK_METHODS: dict[PeakMethod, str] = {
    "v1-reset": "memory.max_usage_in_bytes, reset per batch (exact)",
    "v2-reset": "memory.peak, reset per batch (Linux 6.12+; exact)",
    "v2-lifetime": (
        "memory.peak cannot be reset before Linux 6.12: the lifetime memory.peak where it "
        "rose during the batch (exact), else the highest memory.current read during the "
        "batch or the start plus the workers' peak RSS growth (VmHWM, reset per batch)"
    ),
    "v2-none": (
        "no memory.peak before Linux 5.19: the highest memory.current read during the batch "
        "or the start plus the workers' peak RSS growth (VmHWM, reset per batch)"
    ),
}

RESET_HWM = b"5"  # clear_refs: "reset the peak resident set size to the current RSS"


def describe(method: PeakMethod) -> str:
    return PEAK_METHODS[method]


def _status_kib(pid: int, field: bytes) -> int | None:
    """``field`` (``VmRSS``, ``VmHWM``) of /proc/PID/status in bytes, or None if gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_hwm(pid: int) -> int | None:
    """Reset ``pid``'s peak RSS to its RSS now; returns that RSS (None: not possible)."""
    try:
        fd = os.open(f"/proc/{pid}/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.write(fd, RESET_HWM)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _status_kib(pid, b"VmHWM:")


def hwm(pid: int) -> int | None:
    return _status_kib(pid, b"VmHWM:")


class BatchPeak:
    """The peak of one group since :meth:`reset`, where the kernel cannot reset it.

    Thread-safe: the monitor thread's reads of ``memory.current`` count as much as the
    supervisor's. A read begun before a reset never counts for the batch after it
    (``generation``), so the last batch's high cannot leak into the next one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self._started = False
        self._high = 0
        self._usage_at_reset = 0
        self._lifetime_at_reset: int | None = None
        self._rss_at_reset: dict[int, int] = {}

    def note(self, usage: int, generation: int) -> None:
        """One read of ``memory.current``, begun when the generation was ``generation``."""
        if usage <= self._high:
            return  # the common case, without the lock
        with self._lock:
            if generation == self.generation and usage > self._high:
                self._high = usage

    def reset(self, usage: int, lifetime: int | None, pids: list[int]) -> None:
        """A batch begins: the group uses ``usage`` bytes; its lifetime peak is ``lifetime``."""
        rss = {}
        for pid in pids:
            value = reset_hwm(pid)
            if value is not None:
                rss[pid] = value
        with self._lock:
            self.generation += 1
            self._started = True
            self._high = usage
            self._usage_at_reset = usage
            self._lifetime_at_reset = lifetime
            self._rss_at_reset = rss

    def peak(self, usage: int | None, lifetime: int | None, pids: list[int]) -> int | None:
        """The batch's peak: ``usage`` now (None: gone), the lifetime peak now, its pids."""
        with self._lock:
            started, high = self._started, self._high
            at_reset, start_usage = self._lifetime_at_reset, self._usage_at_reset
            rss_at_reset = dict(self._rss_at_reset)
        if not started:
            return lifetime if lifetime is not None else usage
        if lifetime is not None and at_reset is not None and lifetime > at_reset:
            return lifetime  # a new lifetime high, reached during this batch
        estimate = max(high, usage or 0)
        growth = 0
        for pid in pids:
            peak_rss = hwm(pid)
            if peak_rss is not None and pid in rss_at_reset:
                growth += max(0, peak_rss - rss_at_reset[pid])
        estimate = max(estimate, start_usage + growth)
        if lifetime is not None:
            estimate = min(estimate, lifetime)
        return estimate
