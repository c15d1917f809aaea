"""A cgroup v2 directory as a :class:`MemoryGroup`.

Files: ``memory.max`` (the hard limit) with ``memory.swap.max`` 0 beside it (as v1's
``memory.memsw.limit_in_bytes``: a limit cannot be dodged by swapping), ``memory.high``
(the throttle a hold is made of), ``memory.oom.group`` (one OOM kill takes the whole
group), ``memory.events`` (the kill counter, watched through inotify), ``memory.pressure``
(the group's own PSI), ``cgroup.kill`` (Linux 5.14+: one write kills the whole subtree)
and ``memory.peak``, whose per-batch reading is :mod:`oomguard.limits.peak`'s business.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from oomguard.limits.base import GroupMemory, MemoryGroup
from oomguard.limits.cgroupfs import CgroupGroup, permission_error, write_file
from oomguard.limits.peak import BatchPeak, PeakMethod
from oomguard.memory.cgroups import parse_flat_keyed, read_cgroup_memory


def peak_method_of(directory: Path) -> tuple[PeakMethod, int | None]:
    """How ``directory``'s per-batch peak can be measured, and (for ``v2-reset``) the open
    descriptor whose reading the reset applies to."""
    peak_file = directory / "memory.peak"
    if not peak_file.exists():
        return "v2-none", None
    try:
        fd = os.open(peak_file, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return "v2-lifetime", None  # 0444 before Linux 6.12
    try:
        os.pwrite(fd, b"reset", 0)  # Linux 6.12+: resets what this descriptor reads
    except OSError:
        os.close(fd)  # root may open it; the write is refused
        return "v2-lifetime", None
    return "v2-reset", fd


class CgroupV2Group(CgroupGroup):
    version: Literal["v1", "v2"] = "v2"
    usage_file = "memory.current"
    peak_file = "memory.peak"

    def __init__(
        self, name: str, limit: int | None, parent: MemoryGroup | None, directory: Path
    ) -> None:
        super().__init__(name, limit, parent, directory)
        self._peak_fd: int | None = None
        self._batch_peak: BatchPeak | None = None  # where the kernel cannot reset the peak
        self._method: PeakMethod | None = None  # found at the first reset
        self._high_events: int | None = None  # memory.events "high" when the hold began

    # ------------------------------------------------------------- limits

    def set_limit(self, limit: int | None) -> None:
        try:
            write_file(self.directory / "memory.max", str(limit) if limit is not None else "max")
            swap = self.directory / "memory.swap.max"  # absent without swap accounting
            if swap.exists():
                write_file(swap, "0" if limit is not None else "max")
        except OSError as err:
            raise permission_error(err, "set memory.max of", self.directory) from err
        self.limit = limit

    def set_high(self, high: int | None) -> None:
        """The soft brake: above it the kernel throttles and reclaims instead of killing."""
        write_file(self.directory / "memory.high", str(high) if high is not None else "max")

    can_hold = True

    def hold(self, ceiling: int) -> None:
        # v2 cannot switch the OOM killer off; memory.high throttles the group at the
        # ceiling (reclaim, then sleeps of up to 2 s per allocation) instead
        try:
            self._high_events = self._events().get("high", 0)
            self.set_high(ceiling)
        except OSError as err:
            raise permission_error(err, "set memory.high of", self.directory) from err

    def release(self) -> None:
        try:
            self.set_high(None)
        except OSError as err:
            raise permission_error(err, "set memory.high of", self.directory) from err
        self._high_events = None

    def stalled(self) -> bool:
        """Held, and it reached the ceiling: ``memory.events`` counted a throttle since the
        hold began, or it is at the ceiling now (reclaim can take it a little below between
        two throttles, so the counter is what says it for sure)."""
        if self._high_events is None:
            return False
        try:
            if self._events().get("high", 0) > self._high_events:
                return True
            high = self._pread_int("memory.high")
            return high is not None and self.usage() >= high
        except OSError:
            return False

    def _events(self) -> dict[str, int]:
        return parse_flat_keyed((self.directory / "memory.events").read_text())

    def set_oom_group(self, enabled: bool) -> None:
        write_file(self.directory / "memory.oom.group", "1" if enabled else "0")

    def kill_all(self, timeout: float = 5.0) -> None:
        kill_file = self.directory / "cgroup.kill"  # Linux 5.14+: one write kills the tree
        if kill_file.exists():
            try:
                write_file(kill_file, "1")
            except OSError:
                pass
        super().kill_all(timeout)  # and waits until they are gone (or kills, before 5.14)

    # ------------------------------------------------------------- readings

    def usage(self) -> int:
        batch_peak = self._batch_peak
        if batch_peak is None:
            return super().usage()
        generation = batch_peak.generation
        value = super().usage()
        batch_peak.note(value, generation)  # every read of the hot path counts for the peak
        return value

    def reset_peak(self) -> None:
        if self._method is None:
            self._method, self._peak_fd = peak_method_of(self.directory)
            if self._method != "v2-reset":
                self._batch_peak = BatchPeak()
        if self._peak_fd is not None:
            os.pwrite(self._peak_fd, b"reset", 0)
            return
        assert self._batch_peak is not None
        self._batch_peak.reset(super().usage(), super().peak(), self.pids())

    def peak(self) -> int | None:
        if self._peak_fd is not None:
            return int(os.pread(self._peak_fd, 64, 0).split()[0])
        lifetime = super().peak()
        if self._batch_peak is None:
            return lifetime  # never reset: the group's peak since it was made
        try:
            usage: int | None = super().usage()
        except OSError:
            usage = None
        return self._batch_peak.peak(usage, lifetime, self.pids())

    def read(self) -> GroupMemory:
        memory = read_cgroup_memory(self.directory, "v2")
        return GroupMemory(
            memory.usage,
            memory.limit,
            self.peak(),
            memory.oom_kill,
            memory.working_set,
            memory.events.get("oom_group_kill", 0),
        )

    def remove(self) -> None:
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None
        super().remove()


def peak_method_of_kernel(directory: Path) -> PeakMethod:
    """The method a group in (or like) ``directory`` uses, read from the file's mode without
    writing it: the kernel makes ``memory.peak`` writable (0644) from Linux 6.12, read-only
    (0444) before; the owner does not matter (a delegated subtree's top is not its user's)."""
    try:
        mode = (directory / "memory.peak").stat().st_mode
    except FileNotFoundError:
        return "v2-none"
    return "v2-reset" if mode & stat.S_IWUSR else "v2-lifetime"
