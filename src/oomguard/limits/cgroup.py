"""Memory limits enforced by the kernel through cgroups, v1 and v2.

Layout: the job group is created under the supervisor's own memory cgroup (never under
the root of the hierarchy), one child per worker under it::

    <our cgroup>/oomguard-<supervisor pid>-<token>-job/      job: hard limit = the budget
    <our cgroup>/oomguard-<supervisor pid>-<token>-job/w<slot>-<generation>/   a worker (optional limit)

The supervisor pid in the name lets a later run remove what a killed supervisor left
behind (:func:`sweep_stale_groups`).

A cgroup v2 subtree delegated to a user (``systemd-run --user --scope -p Delegate=yes``)
holds the user's processes, and v2 lets only leaves hold processes: before its groups can
have memory limits, oomguard moves those processes into a leaf of their own,
``<our cgroup>/oomguard.supervisor`` (:func:`move_into_leaf`), and makes its groups
beside it.

The groups themselves: :mod:`oomguard.limits.cgroupfs` (the shared files, and v1) and
:mod:`oomguard.limits.cgroup_v2`.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import Literal

import psutil

from oomguard.errors import CgroupPermissionError
from oomguard.limits.base import EventSource, Limiter, MemoryGroup
from oomguard.limits.cgroup_v2 import CgroupV2Group
from oomguard.limits.cgroupfs import (
    CgroupGroup,
    CgroupV1Group,
    permission_error,
    read_procs,
    remove_dir,
    remove_tree,
    write_file,
)
from oomguard.limits.notify import CgroupEventSource
from oomguard.limits.peak import PeakMethod

GROUP_PREFIX = "oomguard-"
PID_START_SLACK = 1.0  # seconds: psutil's start time is derived from boot time and ticks
SUPERVISOR_LEAF = "oomguard.supervisor"  # no GROUP_PREFIX: it is no job's, and never swept

__all__ = [
    "GROUP_PREFIX",
    "SUPERVISOR_LEAF",
    "CgroupGroup",
    "CgroupLimiter",
    "CgroupV1Group",
    "CgroupV2Group",
    "enable_memory_controller",
    "group_base",
    "move_into_leaf",
    "sweep_stale_groups",
]


class CgroupLimiter(Limiter):
    """Groups as real cgroups under ``base`` (the supervisor's own memory cgroup)."""

    def __init__(
        self,
        version: Literal["v1", "v2"],
        base: Path,
        reason: str = "",
        peak_method: PeakMethod | None = None,
    ) -> None:
        super().__init__()
        self.version = version
        self.peak_method: PeakMethod | None = "v1-reset" if version == "v1" else peak_method
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
            raise permission_error(err, "create cgroup", directory) from err
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
        write_file(control, "+memory")
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise CgroupPermissionError(
                f"cannot enable the memory controller below {directory}: it holds processes "
                "(cgroup v2's no-internal-process rule) that cannot be moved into "
                f"{directory / SUPERVISOR_LEAF}; run oomguard in a cgroup of its own, e.g. "
                "systemd-run --user --scope -p MemoryMax=6G -p Delegate=yes oomguard ...",
                str(directory),
            ) from err
        raise permission_error(err, "enable the memory controller in", control) from err


def group_base(memory_dir: Path) -> Path:
    """Where oomguard's groups go: the process's own memory cgroup, or, once it has moved
    into its leaf (:func:`move_into_leaf`), the cgroup above the leaf."""
    return memory_dir.parent if memory_dir.name == SUPERVISOR_LEAF else memory_dir


def needs_leaf(base: Path, mount: Path | None) -> bool:
    """v2: ``base`` holds processes, so no child of it can have a memory limit until they
    leave (the root cgroup is exempt from that rule)."""
    if base == mount:
        return False
    try:
        if "memory" in (base / "cgroup.subtree_control").read_text().split():
            return False
    except OSError:
        return False
    return bool(read_procs(base))


def can_move_into_leaf(base: Path) -> bool:
    """Whether this user may make the leaf and move ``base``'s processes into it (a subtree
    delegated to it: the directory, ``cgroup.procs`` and ``cgroup.subtree_control`` its own)."""
    return all(
        os.access(path, os.W_OK)
        for path in (base, base / "cgroup.procs", base / "cgroup.subtree_control")
    )


def move_into_leaf(base: Path) -> Path:
    """Move every process of ``base`` into ``base/oomguard.supervisor``, as systemd does in
    a subtree delegated to it: cgroup v2 lets only leaves hold processes, and the job's
    groups need ``base`` to enable the memory controller for its children."""
    leaf = base / SUPERVISOR_LEAF
    try:
        leaf.mkdir(mode=0o755, exist_ok=True)
    except OSError as err:
        raise permission_error(err, "create cgroup", leaf) from err
    for pid in read_procs(base):
        try:
            write_file(leaf / "cgroup.procs", str(pid))
        except OSError as err:
            if err.errno != errno.ESRCH:  # gone meanwhile: nothing to move
                raise permission_error(err, f"move pid {pid} into", leaf) from err
    return leaf


def owner_alive(owner: int, group: Path) -> bool:
    """Whether the supervisor that made ``group`` still runs: its pid lives, and that
    process started before the group was made (pids wrap: on a busy machine a dead
    supervisor's pid soon belongs to another process, whose group this is not)."""
    try:
        started = psutil.Process(owner).create_time()
        info = group.stat()
    except (psutil.Error, OSError):
        return False
    made_by = min(info.st_ctime, info.st_mtime)  # neither is older than the group
    return started <= made_by + PID_START_SLACK


def left_by_dead_owner(entry: Path, prefix: str) -> bool:
    """Whether ``entry``, named ``<prefix><pid>-...`` by the process that made it, outlived
    that process (a stale group, an executor's private run directory)."""
    if not entry.name.startswith(prefix):
        return False
    try:
        owner = int(entry.name[len(prefix) :].split("-", 1)[0])
    except ValueError:
        return False
    return not owner_alive(owner, entry)


def sweep_stale_groups(base: Path) -> list[Path]:
    """Remove ``oomguard-<pid>-*`` cgroups under ``base`` whose supervisor ``pid`` is dead."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    removed = [e for e in entries if e.is_dir() and left_by_dead_owner(e, GROUP_PREFIX)]
    for entry in removed:
        remove_tree(entry)
    return removed
