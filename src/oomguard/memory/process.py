"""Memory of a process and all of its descendants, read through psutil.

A process that exits while we read it is normal (workers die; that is the point of
oomguard): it simply stops counting. Nothing here raises for a vanished process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeMemory:
    """Summed memory of a process tree, in bytes.

    ``uss``/``pss`` are ``None`` unless detail was asked for and every process's
    smaps could be read (they need the same user or root).
    """

    rss: int
    vms: int
    uss: int | None
    pss: int | None
    pids: tuple[int, ...]

    @property
    def alive(self) -> bool:
        return bool(self.pids)


EMPTY_TREE = TreeMemory(rss=0, vms=0, uss=None, pss=None, pids=())


def tree_processes(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and its descendants; empty if ``pid`` is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def sum_memory(processes: Iterable[psutil.Process], *, detail: bool = False) -> TreeMemory:
    """Sum RSS/VMS (and USS/PSS with ``detail``) over ``processes``, skipping vanished ones."""
    rss = vms = 0
    uss: int | None = 0 if detail else None
    pss: int | None = 0 if detail else None
    pids: list[int] = []
    for proc in processes:
        try:
            if detail:
                full = proc.memory_full_info()
                rss += full.rss
                vms += full.vms
                if uss is not None:
                    uss += full.uss
                if pss is not None:
                    pss += full.pss
            else:
                info = proc.memory_info()
                rss += info.rss
                vms += info.vms
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            if not detail:
                continue
            # smaps is unreadable for this process: fall back to RSS/VMS for it
            uss = pss = None
            try:
                info = proc.memory_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            vms += info.vms
        pids.append(proc.pid)
    return TreeMemory(rss=rss, vms=vms, uss=uss, pss=pss, pids=tuple(pids))


def read_tree_memory(pid: int, *, detail: bool = False) -> TreeMemory:
    """Memory of ``pid`` and every descendant. A vanished ``pid`` gives :data:`EMPTY_TREE`."""
    return sum_memory(tree_processes(pid), detail=detail)


def read_rss(pid: int) -> int:
    """RSS of one process in bytes, 0 if it is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0
