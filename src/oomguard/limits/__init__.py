"""Enforcing memory: cgroups (v1, v2), OOM-kill notification, the watchdog fallback.

Only this package and :mod:`oomguard.memory` touch ``/sys/fs/cgroup``.
"""

from typing import TYPE_CHECKING

from oomguard._lazy import lazy_exports

_EXPORTS = {
    "CgroupAccess": "oomguard.limits.select_limiter",
    "CgroupLimiter": "oomguard.limits.cgroup",
    "EventSource": "oomguard.limits.base",
    "GroupMemory": "oomguard.limits.base",
    "Limiter": "oomguard.limits.base",
    "MemoryGroup": "oomguard.limits.base",
    "OomEvent": "oomguard.limits.base",
    "WORKER_OOM_SCORE_ADJ": "oomguard.limits.process",
    "WatchdogLimiter": "oomguard.limits.watchdog",
    "apply_rlimit_as": "oomguard.limits.process",
    "open_limiter": "oomguard.limits.select_limiter",
    "probe_cgroup_access": "oomguard.limits.select_limiter",
    "protect_supervisor": "oomguard.limits.process",
    "read_oom_score_adj": "oomguard.limits.process",
    "set_oom_score_adj": "oomguard.limits.process",
    "sweep_stale_groups": "oomguard.limits.cgroup",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)
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

if TYPE_CHECKING:
    from oomguard.limits.base import (
        EventSource,
        GroupMemory,
        Limiter,
        MemoryGroup,
        OomEvent,
    )
    from oomguard.limits.cgroup import (
        CgroupLimiter,
        sweep_stale_groups,
    )
    from oomguard.limits.process import (
        WORKER_OOM_SCORE_ADJ,
        apply_rlimit_as,
        protect_supervisor,
        read_oom_score_adj,
        set_oom_score_adj,
    )
    from oomguard.limits.select_limiter import (
        CgroupAccess,
        open_limiter,
        probe_cgroup_access,
    )
    from oomguard.limits.watchdog import (
        WatchdogLimiter,
    )
