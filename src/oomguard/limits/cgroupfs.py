"""A cgroup directory as a :class:`MemoryGroup`: the files both versions share, and v1.

Moving, listing, killing and removing work the same on v1 and v2; what differs lives in
:class:`CgroupV1Group` (here) and :class:`~oomguard.limits.cgroup_v2.CgroupV2Group`.

v1 files: ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` where swap
accounting exists, so a limit cannot be dodged by swapping), ``memory.max_usage_in_bytes``
(peak, reset by writing 0), ``memory.oom_control`` (the OOM killer switch, for holds).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Literal

from oomguard.errors import CgroupError, CgroupPermissionError
from oomguard.limits.base import GroupMemory, MemoryGroup
from oomguard.memory.cgroups import (
    INACTIVE_FILE_KEY,
    STAT_READ_BYTES,
    parse_flat_keyed,
    read_cgroup_memory,
    stat_value,
    working_set,
)
from oomguard.memory.system import MemoryPressure, read_pressure

_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def write_file(path: Path, value: str) -> None:
    # one write() per value: cgroup files act on each write call
    with open(path, "w") as handle:
        handle.write(value)


def permission_error(err: OSError, action: str, path: Path) -> CgroupError:
    if err.errno in _PERMISSION_ERRNOS:
        return CgroupPermissionError(f"cannot {action} {path}: {err.strerror}", str(path))
    return CgroupError(f"cannot {action} {path}: {err.strerror or err}", str(path))


def read_procs(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def kill_procs(path: Path, timeout: float) -> None:
    """SIGKILL every process in the cgroup ``path`` until it is empty (or ``timeout``).

    It never reaps: the processes' parent (often our caller's ``Popen``) must still see
    their exit status, and a dying task leaves ``cgroup.procs`` before it is reaped.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        pids = read_procs(path)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        if time.monotonic() > deadline:
            raise CgroupError(
                f"processes {pids} in {path} did not die within {timeout}s", str(path)
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def remove_dir(path: Path, timeout: float = 5.0) -> None:
    """rmdir a cgroup, retrying while its last tasks finish exiting."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise permission_error(err, "remove", path) from err
            kill_procs(path, timeout=max(0.1, deadline - time.monotonic()))
            time.sleep(delay)  # a killed task leaves the cgroup a moment after it dies
            delay = min(delay * 2, 0.05)


def groups_under(path: Path) -> list[Path]:
    """The cgroup ``path`` and every cgroup below it, the deepest first (an executor started
    by an item makes its groups inside its worker's)."""
    found = [Path(top) for top, _, _ in os.walk(path)]
    return sorted(found, key=lambda group: len(group.parts), reverse=True)


def kill_tree(path: Path, timeout: float = 5.0) -> None:
    """SIGKILL every process in ``path`` and in the cgroups below it: a cgroup's
    ``cgroup.procs`` lists only its own processes, not its children's."""
    for group in groups_under(path):
        kill_procs(group, timeout)


def remove_tree(path: Path, timeout: float = 5.0) -> None:
    """Kill and remove ``path`` with every cgroup below it, the deepest first: a cgroup
    with children cannot be removed."""
    kill_tree(path, timeout)
    for group in groups_under(path):
        remove_dir(group, timeout)


class CgroupGroup(MemoryGroup):
    """A cgroup directory; version specifics live in the two subclasses."""

    version: Literal["v1", "v2"]

    usage_file = "memory.usage_in_bytes"
    peak_file = "memory.max_usage_in_bytes"

    def __init__(
        self, name: str, limit: int | None, parent: MemoryGroup | None, directory: Path
    ) -> None:
        super().__init__(name, limit, parent)
        self.directory = directory
        self._fds: dict[str, int] = {}

    def _pread_int(self, name: str) -> int | None:
        """Read a one-number cgroup file through a descriptor kept open (no open() per read)."""
        fd = self._fds.get(name)
        if fd is None:
            try:
                fd = self._fds[name] = os.open(self.directory / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
        text = os.pread(fd, 64, 0).split()
        if not text or text[0] == b"max":
            return None
        return int(text[0])

    def usage(self) -> int:
        value = self._pread_int(self.usage_file)
        if value is None:
            raise FileNotFoundError(f"{self.directory}/{self.usage_file}")
        return value

    def working_set(self) -> int:
        return self.charge()[1]

    def charge(self) -> tuple[int, int]:
        usage = self.usage()
        fd = self._fds.get("memory.stat")
        if fd is None:
            try:
                fd = self._fds["memory.stat"] = os.open(
                    self.directory / "memory.stat", os.O_RDONLY | os.O_CLOEXEC
                )
            except FileNotFoundError:
                return usage, usage  # no memory.stat: nothing known to subtract
        inactive = stat_value(os.pread(fd, STAT_READ_BYTES, 0), INACTIVE_FILE_KEY[self.version])
        return usage, working_set(usage, inactive)

    def peak(self) -> int | None:
        return self._pread_int(self.peak_file)

    def pressure(self) -> MemoryPressure | None:
        """PSI of this group's own tasks (``memory.pressure``: cgroup v2), or None."""
        return read_pressure(self.directory / "memory.pressure")

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    @property
    def path(self) -> str:
        return str(self.directory)

    @property
    def key(self) -> str:
        return str(self.directory)

    def add_pid(self, pid: int) -> None:
        try:
            write_file(self.directory / "cgroup.procs", str(pid))
        except OSError as err:
            if err.errno == errno.ESRCH:
                return  # it died before we could move it: the caller will see the death
            raise permission_error(err, f"move pid {pid} into", self.directory) from err

    def join_file(self) -> str | None:
        return str(self.directory / "cgroup.procs")

    def pids(self) -> list[int]:
        return read_procs(self.directory)

    def kill_all(self, timeout: float = 5.0) -> None:
        kill_tree(self.directory, timeout)

    def remove(self) -> None:
        if self.removed:
            return
        self._close_fds()
        if self.directory.exists():
            self.kill_all()  # v2's kills the tree with one write
            remove_tree(self.directory)
        self.removed = True


class CgroupV1Group(CgroupGroup):
    version: Literal["v1", "v2"] = "v1"
    can_hold = True

    def set_limit(self, limit: int | None) -> None:
        self._write_limit(limit)
        self.limit = limit

    def hold(self, ceiling: int) -> None:
        # the OOM killer off first: reaching the ceiling must stall, never kill
        try:
            write_file(self.directory / "memory.oom_control", "1")
        except OSError as err:
            raise permission_error(err, "disable the OOM killer of", self.directory) from err
        self._write_limit(ceiling)

    def release(self) -> None:
        # the limit first: raising it wakes the stalled tasks; then the OOM killer again
        self._write_limit(self.limit)
        try:
            write_file(self.directory / "memory.oom_control", "0")
        except OSError as err:
            raise permission_error(err, "enable the OOM killer of", self.directory) from err

    def stalled(self) -> bool:
        try:
            text = (self.directory / "memory.oom_control").read_text()
        except OSError:
            return False
        return parse_flat_keyed(text).get("under_oom", 0) == 1

    def _write_limit(self, limit: int | None) -> None:
        value = str(limit) if limit is not None else "-1"
        memsw = self.directory / "memory.memsw.limit_in_bytes"
        try:
            if memsw.exists() and limit is not None:
                current = read_cgroup_memory(self.directory, "v1").limit
                # memsw must stay >= the memory limit: raise memsw first, lower it last
                if current is not None and limit > current:
                    write_file(memsw, value)
                    write_file(self.directory / "memory.limit_in_bytes", value)
                else:
                    write_file(self.directory / "memory.limit_in_bytes", value)
                    write_file(memsw, value)
            else:
                if memsw.exists():
                    write_file(memsw, value)
                write_file(self.directory / "memory.limit_in_bytes", value)
        except OSError as err:
            raise permission_error(err, "set the memory limit of", self.directory) from err

    def read(self) -> GroupMemory:
        memory = read_cgroup_memory(self.directory, "v1")
        return GroupMemory(
            memory.usage, memory.limit, memory.peak, memory.oom_kill, memory.working_set
        )

    def reset_peak(self) -> None:
        # once per batch: through a descriptor kept open, as the reads are
        fd = self._fds.get("reset:memory.max_usage_in_bytes")
        if fd is None:
            path = self.directory / "memory.max_usage_in_bytes"
            fd = self._fds["reset:memory.max_usage_in_bytes"] = os.open(
                path, os.O_WRONLY | os.O_CLOEXEC
            )
        os.pwrite(fd, b"0", 0)
