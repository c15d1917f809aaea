"""Per-process knobs: the OOM killer's preference (``oom_score_adj``) and ``RLIMIT_AS``."""

from __future__ import annotations

import resource
from pathlib import Path

WORKER_OOM_SCORE_ADJ = 1000  # workers are the kernel's first choice
SUPERVISOR_OOM_SCORE_ADJ = -1000  # the supervisor is never chosen, where we may say so


def set_oom_score_adj(value: int, pid: int | str = "self") -> bool:
    """Set ``oom_score_adj`` of ``pid``; ``False`` if the kernel refused (lowering needs root)."""
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(value))
    except OSError:
        return False
    return True


def read_oom_score_adj(pid: int | str = "self") -> int | None:
    try:
        return int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


CAP_SYS_RESOURCE = 24


def can_lower_oom_score_adj(status: Path = Path("/proc/self/status")) -> bool:
    """Lowering ``oom_score_adj`` needs CAP_SYS_RESOURCE (root in a container may lack it)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def protect_supervisor() -> int | None:
    """Lower this process's ``oom_score_adj`` as far as allowed; returns the value in force.

    Children inherit the value, so everything the supervisor starts must set its own
    (workers: :data:`WORKER_OOM_SCORE_ADJ`).
    """
    for value in (SUPERVISOR_OOM_SCORE_ADJ, -500, 0):
        current = read_oom_score_adj()
        if current is not None and current <= value:
            return current
        if set_oom_score_adj(value):
            return value
    return read_oom_score_adj()


def apply_rlimit_as(limit: int) -> None:
    """Cap this process's address space: a guard where no cgroup can be written.

    Address space is not RSS (mapped-but-untouched memory counts), so it is only a coarse
    backstop; allocations past it raise MemoryError instead of being killed.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
