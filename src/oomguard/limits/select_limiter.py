"""Choosing how memory limits are enforced, once, at start.

``auto``: a writable cgroup memory controller (v1 or v2) if there is one, else the RSS
watchdog, with the reason recorded in :attr:`Limiter.reason` for ``oomguard doctor`` and
the run's summary. ``cgroup`` insists on cgroups (error if impossible); ``watchdog``
always uses the watchdog.

On cgroup v2 the probe also says how a batch's peak will be measured (Linux 6.12+ resets
``memory.peak``; older kernels cannot: :mod:`oomguard.limits.peak`), and whether the
processes of a delegated subtree must first move into a leaf (:func:`move_into_leaf`).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomguard.errors import CgroupError, CgroupPermissionError, ConfigError
from oomguard.limits.base import Limiter
from oomguard.limits.cgroup import (
    GROUP_PREFIX,
    SUPERVISOR_LEAF,
    CgroupLimiter,
    can_move_into_leaf,
    enable_memory_controller,
    group_base,
    move_into_leaf,
    needs_leaf,
)
from oomguard.limits.cgroup_v2 import peak_method_of_kernel
from oomguard.limits.peak import PeakMethod
from oomguard.limits.watchdog import DEFAULT_INTERVAL, WatchdogLimiter
from oomguard.memory.cgroups import CgroupSetup, detect_setup

Mode = Literal["auto", "cgroup", "watchdog"]
MODES = ("auto", "cgroup", "watchdog")


@dataclass(frozen=True)
class CgroupAccess:
    """Whether this process may create memory cgroups, and if not, why."""

    writable: bool
    version: Literal["v1", "v2"] | None
    base: Path | None
    reason: str
    peak_method: PeakMethod | None = None  # how a batch's peak is measured (limits/peak.py)
    delegated: bool = False  # a v2 subtree holding processes: they move into SUPERVISOR_LEAF


def probe_cgroup_access(
    setup: CgroupSetup | None = None, *, move_processes: bool = False
) -> CgroupAccess:
    """Try to create (and remove) a probe cgroup under this process's memory cgroup.

    A v2 cgroup that holds processes (a subtree delegated to this user) cannot give its
    children memory limits until they move into a leaf: with ``move_processes`` (what
    :func:`open_limiter` does) they are moved; without it (``oomguard doctor``, which
    changes nothing) the probe only checks that this user could move them.
    """
    setup = setup if setup is not None else detect_setup()
    if setup.memory_version is None or setup.memory_dir is None:
        why = "; ".join(setup.notes) or "no memory cgroup found"
        return CgroupAccess(False, None, None, why)
    base = group_base(setup.memory_dir)
    if setup.read_only:
        return CgroupAccess(False, setup.memory_version, base, f"{base} is mounted read-only")
    delegated = setup.memory_version == "v2" and needs_leaf(base, setup.memory_mount)
    if delegated and not move_processes:
        if not can_move_into_leaf(base):
            return CgroupAccess(
                False,
                "v2",
                base,
                f"{base} holds processes and is not delegated to this user (cgroup.procs "
                "and cgroup.subtree_control not writable), so its children cannot have "
                "memory limits",
            )
        return CgroupAccess(
            True,
            "v2",
            base,
            f"cgroup v2 subtree delegated at {base}: its processes move into "
            f"{base / SUPERVISOR_LEAF} and the job's groups are made beside it",
            peak_method_of_kernel(base),
            delegated=True,
        )
    if delegated:
        try:
            move_into_leaf(base)
        except CgroupError as err:
            return CgroupAccess(False, "v2", base, str(err))
    access = _probe(setup.memory_version, base)
    if delegated and access.writable:
        return CgroupAccess(
            True,
            "v2",
            base,
            f"cgroup v2 subtree delegated at {base}: its processes moved into "
            f"{base / SUPERVISOR_LEAF}, the job's groups are made beside it",
            access.peak_method,
            delegated=True,
        )
    return access


def _probe(version: Literal["v1", "v2"], base: Path) -> CgroupAccess:
    probe = base / f"{GROUP_PREFIX}{os.getpid()}-probe"
    try:
        if version == "v2":
            enable_memory_controller(base)
        probe.mkdir()
        limit_file = "memory.limit_in_bytes" if version == "v1" else "memory.max"
        if not (probe / limit_file).exists():
            raise CgroupError(f"{base} is not a memory cgroup ({limit_file} missing)", str(base))
        peak_method: PeakMethod = "v1-reset" if version == "v1" else peak_method_of_kernel(probe)
    except CgroupError as err:
        _rmdir_quietly(probe)
        return CgroupAccess(False, version, base, str(err))
    except OSError as err:
        _rmdir_quietly(probe)
        what = {
            errno.EACCES: "permission denied",
            errno.EPERM: "not permitted",
            errno.EROFS: "read-only file system",
        }.get(err.errno or 0, err.strerror or str(err))
        return CgroupAccess(False, version, base, f"cannot create a cgroup under {base}: {what}")
    _rmdir_quietly(probe)
    return CgroupAccess(
        True, version, base, f"cgroup {version} memory controller writable at {base}", peak_method
    )


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def open_limiter(
    mode: Mode = "auto",
    *,
    setup: CgroupSetup | None = None,
    watchdog_interval: float = DEFAULT_INTERVAL,
) -> Limiter:
    """The limiter for this machine. Close it (or use ``with``) to remove its groups."""
    if mode not in MODES:
        raise ConfigError(f"invalid limiter mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "watchdog":
        return WatchdogLimiter(watchdog_interval, reason="watchdog requested")
    access = probe_cgroup_access(setup, move_processes=True)
    if access.writable and access.version is not None and access.base is not None:
        return CgroupLimiter(
            access.version, access.base, reason=access.reason, peak_method=access.peak_method
        )
    if mode == "cgroup":
        raise CgroupPermissionError(
            f"cgroups cannot be used: {access.reason}", str(access.base) if access.base else None
        )
    return WatchdogLimiter(
        watchdog_interval,
        reason=f"RSS watchdog every {watchdog_interval * 1000:.0f} ms, because {access.reason}",
    )
