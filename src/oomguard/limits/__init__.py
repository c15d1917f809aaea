"""Enforcing memory: cgroups (v1, v2), OOM-kill notification, the watchdog fallback.

Only this package and :mod:`oomguard.memory` touch ``/sys/fs/cgroup``.
"""

from oomguard.limits.base import EventSource, GroupMemory, Limiter, MemoryGroup, OomEvent
from oomguard.limits.cgroup import CgroupLimiter, sweep_stale_groups
from oomguard.limits.process import (
    WORKER_OOM_SCORE_ADJ,
    apply_rlimit_as,
    protect_supervisor,
    read_oom_score_adj,
    set_oom_score_adj,
)
from oomguard.limits.select_limiter import CgroupAccess, open_limiter, probe_cgroup_access
from oomguard.limits.watchdog import WatchdogLimiter

__all__ = [
    "WORKER_OOM_SCORE_ADJ",
    "CgroupAccess",
    "CgroupLimiter",
    "EventSource",
    "GroupMemory",
    "Limiter",
    "MemoryGroup",
    "OomEvent",
    "WatchdogLimiter",
    "apply_rlimit_as",
    "open_limiter",
    "probe_cgroup_access",
    "protect_supervisor",
    "read_oom_score_adj",
    "set_oom_score_adj",
    "sweep_stale_groups",
]
