"""Memory limits enforced by the kernel through cgroups, v1 and v2.

Layout: the job group is created under the supervisor's own memory cgroup (never under
the root of the hierarchy), one child per worker under it::

    <our cgroup>/oomguard-<supervisor pid>-<token>-job/      job: hard limit = the budget
    <our cgroup>/oomguard-<supervisor pid>-<token>-job/w<slot>-<generation>/   a worker (optional limit)

The supervisor pid in the name lets a later run remove what a killed supervisor left
behind (:func:`sweep_stale_groups`).

v1 files: ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` where swap
accounting exists, so a limit cannot be dodged by swapping), ``memory.max_usage_in_bytes``
(peak, reset by writing 0). v2 files: ``memory.max``, ``memory.high`` (soft brake),
``memory.oom.group``, ``memory.peak`` (reset per open file, Linux 6.12+), ``cgroup.kill``.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Literal

import psutil

from oomguard.errors import CgroupError, CgroupPermissionError
from oomguard.limits.base import EventSource, GroupMemory, Limiter, MemoryGroup
from oomguard.limits.notify import CgroupEventSource
from oomguard.memory.cgroups import (
    INACTIVE_FILE_KEY,
    STAT_READ_BYTES,
    parse_flat_keyed,
    read_cgroup_memory,
    stat_value,
    working_set,
)

GROUP_PREFIX = "oomguard-"
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def _write(path: Path, value: str) -> None:
    # one write() per value: cgroup files act on each write call
    with open(path, "w") as handle:
        handle.write(value)


def _permission_error(err: OSError, action: str, path: Path) -> CgroupError:
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
                raise _permission_error(err, "remove", path) from err
            kill_procs(path, timeout=max(0.1, deadline - time.monotonic()))
            time.sleep(delay)  # a killed task leaves the cgroup a moment after it dies
            delay = min(delay * 2, 0.05)


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
            _write(self.directory / "cgroup.procs", str(pid))
        except OSError as err:
            if err.errno == errno.ESRCH:
                return  # it died before we could move it: the caller will see the death
            raise _permission_error(err, f"move pid {pid} into", self.directory) from err

    def join_file(self) -> str | None:
        return str(self.directory / "cgroup.procs")

    def pids(self) -> list[int]:
        return read_procs(self.directory)

    def kill_all(self, timeout: float = 5.0) -> None:
        kill_procs(self.directory, timeout)

    def remove(self) -> None:
        if self.removed:
            return
        self._close_fds()
        if self.directory.exists():
            self.kill_all()
            remove_dir(self.directory)
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
            _write(self.directory / "memory.oom_control", "1")
        except OSError as err:
            raise _permission_error(err, "disable the OOM killer of", self.directory) from err
        self._write_limit(ceiling)

    def release(self) -> None:
        # the limit first: raising it wakes the stalled tasks; then the OOM killer again
        self._write_limit(self.limit)
        try:
            _write(self.directory / "memory.oom_control", "0")
        except OSError as err:
            raise _permission_error(err, "enable the OOM killer of", self.directory) from err

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
                    _write(memsw, value)
                    _write(self.directory / "memory.limit_in_bytes", value)
                else:
                    _write(self.directory / "memory.limit_in_bytes", value)
                    _write(memsw, value)
            else:
                if memsw.exists():
                    _write(memsw, value)
                _write(self.directory / "memory.limit_in_bytes", value)
        except OSError as err:
            raise _permission_error(err, "set the memory limit of", self.directory) from err

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


class CgroupV2Group(CgroupGroup):
    version: Literal["v1", "v2"] = "v2"
    usage_file = "memory.current"
    peak_file = "memory.peak"

    def __init__(
        self, name: str, limit: int | None, parent: MemoryGroup | None, directory: Path
    ) -> None:
        super().__init__(name, limit, parent, directory)
        self._peak_fd: int | None = None

    def set_limit(self, limit: int | None) -> None:
        try:
            _write(self.directory / "memory.max", str(limit) if limit is not None else "max")
        except OSError as err:
            raise _permission_error(err, "set memory.max of", self.directory) from err
        self.limit = limit

    def set_high(self, high: int | None) -> None:
        """The soft brake: above it the kernel throttles and reclaims instead of killing."""
        _write(self.directory / "memory.high", str(high) if high is not None else "max")

    can_hold = True

    def hold(self, ceiling: int) -> None:
        # v2 cannot switch the OOM killer off; memory.high throttles the group at the
        # ceiling (reclaim, then sleeps of up to 2 s per allocation) instead
        try:
            self.set_high(ceiling)
        except OSError as err:
            raise _permission_error(err, "set memory.high of", self.directory) from err

    def release(self) -> None:
        try:
            self.set_high(None)
        except OSError as err:
            raise _permission_error(err, "set memory.high of", self.directory) from err

    def stalled(self) -> bool:
        high = self._pread_int("memory.high")
        return high is not None and self.usage() >= high

    def set_oom_group(self, enabled: bool) -> None:
        _write(self.directory / "memory.oom.group", "1" if enabled else "0")

    def read(self) -> GroupMemory:
        memory = read_cgroup_memory(self.directory, "v2")
        peak = memory.peak
        if self._peak_fd is not None:
            peak = int(os.pread(self._peak_fd, 64, 0).split()[0])
        return GroupMemory(memory.usage, memory.limit, peak, memory.oom_kill, memory.working_set)

    def reset_peak(self) -> None:
        # Linux 6.12+: a write resets the peak as seen through this open file description
        peak_file = self.directory / "memory.peak"
        if not peak_file.exists():
            return
        if self._peak_fd is None:
            self._peak_fd = os.open(peak_file, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.pwrite(self._peak_fd, b"reset", 0)
        except OSError:
            os.close(self._peak_fd)  # an older kernel: memory.peak is read-only
            self._peak_fd = None

    def kill_all(self, timeout: float = 5.0) -> None:
        kill_file = self.directory / "cgroup.kill"  # Linux 5.14+: one write kills the tree
        if kill_file.exists():
            try:
                _write(kill_file, "1")
            except OSError:
                pass
        kill_procs(self.directory, timeout)

    def remove(self) -> None:
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None
        super().remove()

    def peak(self) -> int | None:
        if self._peak_fd is not None:
            return int(os.pread(self._peak_fd, 64, 0).split()[0])
        return super().peak()


class CgroupLimiter(Limiter):
    """Groups as real cgroups under ``base`` (the supervisor's own memory cgroup)."""

    def __init__(self, version: Literal["v1", "v2"], base: Path, reason: str = "") -> None:
        super().__init__()
        self.version = version
        self.kind = f"cgroup-{version}"
        self.base = base
        self.reason = reason or f"cgroup {version} memory controller writable at {base}"
        self._events = CgroupEventSource(version)
        self._token = f"{GROUP_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"

    @property
    def events(self) -> EventSource:
        return self._events

    def _create(
        self, name: str, limit: int | None, parent: MemoryGroup | None, *, oom_group: bool
    ) -> MemoryGroup:
        if parent is None:
            directory = self.base / f"{self._token}-{name}"
        else:
            assert isinstance(parent, CgroupGroup)
            directory = parent.directory / name
        if self.version == "v2":
            enable_memory_controller(directory.parent)
        try:
            directory.mkdir(mode=0o755)
        except OSError as err:
            raise _permission_error(err, "create cgroup", directory) from err
        group: CgroupGroup
        group = (CgroupV1Group if self.version == "v1" else CgroupV2Group)(
            name, limit, parent, directory
        )
        try:
            if limit is not None:
                group.set_limit(limit)
            if oom_group and isinstance(group, CgroupV2Group):
                group.set_oom_group(True)
            self._events.watch(str(directory), directory)
        except BaseException:
            remove_dir(directory)
            raise
        return group


def enable_memory_controller(directory: Path) -> None:
    """v2: children of ``directory`` can only have memory limits once it delegates them."""
    control = directory / "cgroup.subtree_control"
    try:
        if "memory" in control.read_text().split():
            return
        _write(control, "+memory")
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise CgroupPermissionError(
                f"cannot enable the memory controller below {directory}: it holds processes "
                "(cgroup v2's no-internal-process rule); run oomguard in a cgroup of its own, "
                "e.g. systemd-run --user --scope -p Delegate=yes oomguard ...",
                str(directory),
            ) from err
        raise _permission_error(err, "enable the memory controller in", control) from err


def sweep_stale_groups(base: Path) -> list[Path]:
    """Remove ``oomguard-<pid>-*`` cgroups under ``base`` whose supervisor ``pid`` is dead."""
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not (entry.is_dir() and entry.name.startswith(GROUP_PREFIX)):
            continue
        try:
            owner = int(entry.name[len(GROUP_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if psutil.pid_exists(owner):
            continue
        for child in sorted((p for p in entry.rglob("*") if p.is_dir()), reverse=True):
            kill_procs(child, timeout=5.0)
            remove_dir(child)
        kill_procs(entry, timeout=5.0)
        remove_dir(entry)
        removed.append(entry)
    return removed
