"""Choosing how memory limits are enforced, once, at start.

``auto``: a writable cgroup memory controller (v1 or v2) if there is one, else the RSS
watchdog, with the reason recorded in :attr:`Limiter.reason` for ``oomguard doctor`` and
the run's summary. ``cgroup`` insists on cgroups (error if impossible); ``watchdog``
always uses the watchdog.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomguard.errors import CgroupError, CgroupPermissionError, ConfigError
from oomguard.limits.base import Limiter
from oomguard.limits.cgroup import GROUP_PREFIX, CgroupLimiter, enable_memory_controller
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


def probe_cgroup_access(setup: CgroupSetup | None = None) -> CgroupAccess:
    """Try to create (and remove) a probe cgroup under this process's memory cgroup."""
    setup = setup if setup is not None else detect_setup()
    if setup.memory_version is None or setup.memory_dir is None:
        why = "; ".join(setup.notes) or "no memory cgroup found"
        return CgroupAccess(False, None, None, why)
    base = setup.memory_dir
    if setup.read_only:
        return CgroupAccess(False, setup.memory_version, base, f"{base} is mounted read-only")
    probe = base / f"{GROUP_PREFIX}{os.getpid()}-probe"
    try:
        if setup.memory_version == "v2":
            enable_memory_controller(base)
        probe.mkdir()
        limit_file = "memory.limit_in_bytes" if setup.memory_version == "v1" else "memory.max"
        if not (probe / limit_file).exists():
            raise CgroupError(f"{base} is not a memory cgroup ({limit_file} missing)", str(base))
    except CgroupError as err:
        _rmdir_quietly(probe)
        return CgroupAccess(False, setup.memory_version, base, str(err))
    except OSError as err:
        _rmdir_quietly(probe)
        what = {
            errno.EACCES: "permission denied",
            errno.EPERM: "not permitted",
            errno.EROFS: "read-only file system",
        }.get(err.errno or 0, err.strerror or str(err))
        return CgroupAccess(
            False, setup.memory_version, base, f"cannot create a cgroup under {base}: {what}"
        )
    _rmdir_quietly(probe)
    return CgroupAccess(
        True,
        setup.memory_version,
        base,
        f"cgroup {setup.memory_version} memory controller writable at {base}",
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
    access = probe_cgroup_access(setup)
    if access.writable and access.version is not None and access.base is not None:
        return CgroupLimiter(access.version, access.base, reason=access.reason)
    if mode == "cgroup":
        raise CgroupPermissionError(
            f"cgroups cannot be used: {access.reason}", str(access.base) if access.base else None
        )
    return WatchdogLimiter(
        watchdog_interval,
        reason=f"RSS watchdog every {watchdog_interval * 1000:.0f} ms, because {access.reason}",
    )
