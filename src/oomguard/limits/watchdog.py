"""The fallback where cgroups cannot be written: an RSS watchdog.

A thread samples the process tree of every member of every group (default every 100 ms)
and SIGKILLs over-limit processes, reported as OOM kills with ``source="watchdog"``. It
acts like the kernel would: when a group (or its parent, the job) is over its limit, the
member tree with the most RSS dies. It is coarser than a cgroup (memory can overshoot for
up to one interval, and shared pages are counted in every process), which
``oomguard doctor`` says plainly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

from oomguard.limits.base import (
    EventSource,
    GroupMemory,
    Limiter,
    MemoryGroup,
    OomEvent,
    PipeEventSource,
)
from oomguard.limits.process import kill_trees
from oomguard.memory.process import TreeMemory, read_tree_memory

DEFAULT_INTERVAL = 0.1

TreeReader = Callable[[int], TreeMemory]


def wait_dead(pids: list[int], timeout: float) -> None:
    """Wait until every pid is gone or a zombie, without reaping (its parent must see it)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        if not alive:
            return
        pids = alive
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class WatchdogGroup(MemoryGroup):
    def __init__(
        self, name: str, limit: int | None, parent: MemoryGroup | None, limiter: WatchdogLimiter
    ) -> None:
        super().__init__(name, limit, parent)
        self._limiter = limiter
        self._members: dict[int, float | None] = {}  # pid -> its start time, when known
        self.current = 0  # bytes, as last sampled
        self.highest = 0  # peak since the last reset
        self.oom_kill = 0

    def add_pid(self, pid: int) -> None:
        try:
            born: float | None = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            born = None
        with self._limiter.lock:
            self._members[pid] = born

    def members(self) -> set[int]:
        with self._limiter.lock:
            return set(self._members)

    def live_members(self) -> list[int]:
        """Members still running as the process that was added (a pid the kernel gave to
        another process since is not ours to kill)."""
        with self._limiter.lock:
            members = list(self._members.items())
        alive = []
        for pid, born in members:
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if born is not None and proc.create_time() != born:
                    continue
            except psutil.NoSuchProcess:
                continue
            alive.append(pid)
        return alive

    def pids(self) -> list[int]:
        alive = []
        for pid in self.live_members():
            alive.append(pid)
            try:
                alive.extend(child.pid for child in psutil.Process(pid).children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return alive

    def children(self) -> list[WatchdogGroup]:
        return [g for g in self._limiter.watchdog_groups() if g.parent is self]

    def read(self) -> GroupMemory:
        # RSS is all the watchdog sees: no page cache in it, so the working set is the usage
        return GroupMemory(self.current, self.limit, self.highest, self.oom_kill, self.current)

    def working_set(self) -> int:
        return self.current

    def charge(self) -> tuple[int, int]:
        return self.current, self.current

    def set_limit(self, limit: int | None) -> None:
        self.limit = limit

    def reset_peak(self) -> None:
        self.highest = self.current

    def kill_all(self, timeout: float = 5.0) -> None:
        members = [pid for group in [self, *self.children()] for pid in group.live_members()]
        wait_dead(kill_trees(members), timeout)

    def remove(self) -> None:
        if self.removed:
            return
        for child in self.children():
            child.remove()
        self.kill_all()
        self.removed = True


class WatchdogLimiter(Limiter):
    """Groups enforced by sampling RSS from a thread."""

    kind = "watchdog"

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        reason: str = "",
        read_tree: TreeReader = read_tree_memory,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.reason = reason or "RSS watchdog"
        self.lock = threading.Lock()
        self._read_tree = read_tree
        self._events = PipeEventSource()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def events(self) -> EventSource:
        return self._events

    def watchdog_groups(self) -> list[WatchdogGroup]:
        return [g for g in self.groups() if isinstance(g, WatchdogGroup)]

    def _create(
        self, name: str, limit: int | None, parent: MemoryGroup | None, *, oom_group: bool
    ) -> MemoryGroup:
        group = WatchdogGroup(name, limit, parent, self)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="oomguard-watchdog", daemon=True)
            self._thread.start()
        return group

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_once()

    def check_once(self) -> list[OomEvent]:
        """One sampling pass: update usage, kill what is over its limit. Returns the kills."""
        groups = self.watchdog_groups()
        trees: dict[int, TreeMemory] = {}
        for group in groups:
            for pid in group.members():
                tree = self._read_tree(pid)
                if tree.alive:
                    trees[pid] = tree
        events: list[OomEvent] = []
        # leaves first, so a worker over its own limit dies before the job limit is judged
        for group in sorted(groups, key=lambda g: g.parent is None):
            own = {pid: trees[pid] for pid in group.members() if pid in trees}
            for child in group.children():
                own.update({pid: trees[pid] for pid in child.members() if pid in trees})
            group.current = sum(tree.rss for tree in own.values())
            group.highest = max(group.highest, group.current)
            if group.limit is None or group.current <= group.limit or not own:
                continue
            victim = max(own, key=lambda pid: own[pid].rss)
            events.append(self._kill(group, victim, own[victim]))
            trees.pop(victim, None)
        return events

    def _kill(self, over: WatchdogGroup, victim: int, tree: TreeMemory) -> OomEvent:
        kill_trees([victim])  # the member and all it started, as read now
        # like the kernel, count the kill in the victim's own group (and in the one over limit)
        owner = next((g for g in self.watchdog_groups() if victim in g.members()), over)
        owner.oom_kill += 1
        if over is not owner:
            over.oom_kill += 1
        event = OomEvent(
            owner.key, owner.oom_kill, time.time(), "watchdog", pid=victim, usage=over.current
        )
        self._events.push(event)
        return event

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        super().close()
