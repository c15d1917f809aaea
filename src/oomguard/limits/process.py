"""Per-process knobs: the OOM killer's preference (``oom_score_adj``), ``RLIMIT_AS``, and
process lifetimes (die with the parent, adopt detached descendants, kill whole trees)."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterable
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


# ---------------------------------------------------------------- process lifetimes

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (``PR_SET_PDEATHSIG``),
    however it dies (a supervisor killed by SIGKILL runs no cleanup of its own).

    ``parent``: the pid of the process that started this one, read before it did: if it
    is gone already, this process was reparented before it could ask, and exits now. The
    signal comes when the *thread* that started this process ends, so only processes
    started by a thread that lives as long as they should may call this."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (``PR_SET_CHILD_SUBREAPER``): a child that
    detaches itself (``setsid`` and a double fork) stays in this process's tree instead of
    going to init, where nothing would know it is ours."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s children, from ``/proc/PID/task/*/children``."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except FileNotFoundError:
            if not Path(f"/proc/{pid}").exists():
                return found
            import psutil  # a kernel without CONFIG_PROC_CHILDREN: scan the process table

            try:
                return [child.pid for child in psutil.Process(pid).children()]
            except psutil.Error:
                return found
        except OSError:
            continue
    return found


def kill_trees(roots: Iterable[int]) -> list[int]:
    """SIGKILL every process of the trees under ``roots`` (roots included); returns them.

    Each process is stopped (SIGSTOP) before its children are listed, until a pass finds
    no new one: a stopped process cannot fork, so no child is born between the listing
    and the kill, and none is orphaned (and lost) by its parent dying first."""
    stopped: list[int] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        found: list[int] = []
        for pid in todo:
            if pid in seen:
                continue
            seen.add(pid)
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped.append(pid)
            found.extend(children_of(pid))
        todo = found or [
            child for pid in stopped for child in children_of(pid) if child not in seen
        ]
    for pid in reversed(stopped):  # the deepest first
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return stopped


def kill_descendants() -> list[int]:
    """Kill everything this process started that is still running (as a subreaper, its
    detached descendants too): nothing an item started outlives its worker."""
    return kill_trees(children_of(os.getpid()))
