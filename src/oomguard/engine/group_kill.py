"""Which member to blame when the kernel takes a whole group (``group=True`` on cgroup v2).

With ``group=True`` the job's cgroup has ``memory.oom.group`` set (v2): one OOM kill and
the kernel kills every worker, each counted as an OOM kill in its own cgroup, all dying
within milliseconds in no particular order. Only the one the kernel chose may be blamed
(retried, run alone, bisected, quarantined); the others are members of a group restart,
requeued uncounted, as where the engine emulates the group itself (v1: it kills the others
after the one the kernel chose). The kernel chooses the member holding most (every worker
has ``oom_score_adj`` 1000, so its badness comes down to memory held).
"""

from __future__ import annotations

from collections.abc import Iterable

from oomguard.engine.handles import WorkerHandle


def oom_counted(handle: WorkerHandle) -> bool:
    """The kernel counted an OOM kill in ``handle``'s cgroup since the worker started."""
    try:
        return handle.group.read().oom_kill > handle.oom_baseline
    except OSError:
        return False


def held(handle: WorkerHandle) -> int:
    """What the worker held at its death: its cgroup's peak since its batch began."""
    try:
        return handle.group.peak() or 0
    except OSError:
        return 0


def kernel_victim(dead: WorkerHandle, members: Iterable[WorkerHandle]) -> WorkerHandle:
    """``dead`` died of an OOM kill: the member the kernel chose, ``dead`` itself unless
    another member killed in the same stroke (not yet handled) held more."""
    struck = [
        m for m in members if m is not dead and m.kill_reason is None and not m.group_restarted
    ]
    struck = [m for m in struck if oom_counted(m)]
    return max([dead, *struck], key=held)
