"""The one interface for enforcing memory limits, whatever enforces them.

A :class:`Limiter` makes :class:`MemoryGroup` s (a job group, a group per worker inside it),
puts processes in them, reads and kills them, and reports OOM kills as :class:`OomEvent` s
on one selectable :class:`EventSource`. Implementations: cgroup v1, cgroup v2, and the RSS
watchdog for machines where cgroups cannot be written. The choice is made once, by
:func:`oomguard.limits.open_limiter`.
"""

from __future__ import annotations

import collections
import select
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from oomguard.memory.system import MemoryPressure
from oomguard.wakeup import WakePipe

EventSourceKind = Literal["eventfd", "inotify", "watchdog"]


@dataclass(frozen=True)
class OomEvent:
    """An OOM kill in a group: which group, its new kill count, and when it was seen."""

    group: str  # the group's key (its cgroup directory, or its watchdog name)
    oom_kill: int
    time: float
    source: EventSourceKind
    path: str | None = None  # the cgroup directory, where there is one
    pid: int | None = None  # the victim, when the enforcer knows it (the watchdog does)
    usage: int | None = None  # bytes in use at the kill, when known


class EventSource(ABC):
    """A file descriptor that becomes readable when OOM events may be waiting."""

    @abstractmethod
    def fileno(self) -> int: ...

    @abstractmethod
    def drain(self) -> list[OomEvent]:
        """Every event not yet returned; never blocks."""

    def settle_timeout(self) -> float | None:
        """Seconds until :meth:`drain` should be called again without a wake-up (an event
        announced but not counted yet), or None when only a wake-up can bring events."""
        return None

    def wait(self, timeout: float | None) -> list[OomEvent]:
        """Block until at least one event arrives or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.drain()
            if events:
                return events
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            settle = self.settle_timeout()
            step = settle if left is None else (left if settle is None else min(left, settle))
            select.select([self], [], [], step)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the descriptors."""


class PipeEventSource(EventSource):
    """Events pushed from a thread, made selectable through a self-pipe."""

    def __init__(self) -> None:
        self._pipe = WakePipe()
        self._events: collections.deque[OomEvent] = collections.deque()
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._pipe.fileno()

    def push(self, event: OomEvent) -> None:
        with self._lock:
            self._events.append(event)
        self._pipe.wake()

    def drain(self) -> list[OomEvent]:
        self._pipe.drain()
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def close(self) -> None:
        self._pipe.close()


@dataclass(frozen=True)
class GroupMemory:
    """One reading of a group: bytes charged, its limit, peak since the last reset, OOM
    kills, the working set (what is charged less the page cache the kernel may drop first:
    the figure decisions use; equal to ``usage`` where RSS is all that is known) and, cgroup
    v2, the times ``memory.oom.group`` made one kill take the whole group."""

    usage: int
    limit: int | None
    peak: int | None
    oom_kill: int
    working_set: int
    oom_group_kill: int = 0


class MemoryGroup(ABC):
    """A set of processes whose memory is capped together."""

    def __init__(self, name: str, limit: int | None, parent: MemoryGroup | None) -> None:
        self.name = name
        self.limit = limit
        self.parent = parent
        self.removed = False

    @property
    def path(self) -> str | None:
        """The cgroup directory, or ``None`` for the watchdog."""
        return None

    @property
    def key(self) -> str:
        """Unique among the limiter's groups; :attr:`OomEvent.group` carries it."""
        return self.name if self.parent is None else f"{self.parent.key}/{self.name}"

    @abstractmethod
    def add_pid(self, pid: int) -> None:
        """Move the process ``pid`` (and whatever it starts afterwards) into the group."""

    def join_file(self) -> str | None:
        """A file a process can write its own pid into to join the group (a cgroup's
        ``cgroup.procs``), so a new worker joins before it runs anything; None where only
        :meth:`add_pid` works."""
        return None

    @abstractmethod
    def pids(self) -> list[int]: ...

    @abstractmethod
    def read(self) -> GroupMemory: ...

    def usage(self) -> int:
        """Bytes charged now, page cache included (one file read where the group is a
        cgroup: the hot path)."""
        return self.read().usage

    def working_set(self) -> int:
        """Bytes charged now less the inactive file cache: the memory the kernel cannot
        simply drop, as the kubelet's ``container_memory_working_set_bytes`` (two reads
        through descriptors kept open where the group is a cgroup: the hot path)."""
        return self.read().working_set

    def charge(self) -> tuple[int, int]:
        """``(usage, working_set)`` now, read together (the page cache charged is their
        difference)."""
        reading = self.read()
        return reading.usage, reading.working_set

    def peak(self) -> int | None:
        """Peak bytes since the last :meth:`reset_peak`."""
        return self.read().peak

    @abstractmethod
    def set_limit(self, limit: int | None) -> None: ...

    @abstractmethod
    def reset_peak(self) -> None:
        """Start measuring the peak afresh (per batch)."""

    can_hold = False  # whether hold() works: the kernel can stall the group at a ceiling

    def hold(self, ceiling: int) -> None:
        """Stall the group's processes at ``ceiling`` bytes instead of killing them, until
        :meth:`release`: a process that reaches it waits (v1: the limit with the OOM killer
        disabled; v2: ``memory.high``, which throttles). Only where :attr:`can_hold`."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold a group at a ceiling")

    def release(self) -> None:
        """Lift :meth:`hold`: the group's own limit holds again, and stalled processes go on."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold a group at a ceiling")

    def stalled(self) -> bool:
        """Whether a process of the held group is waiting at its ceiling now."""
        return False

    def pressure(self) -> MemoryPressure | None:
        """Memory PSI of this group's own tasks, where the kernel keeps it per group (cgroup
        v2); None elsewhere (the caller falls back to the machine's)."""
        return None

    @abstractmethod
    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group and wait (up to ``timeout``) for them to go."""

    @abstractmethod
    def remove(self) -> None:
        """Kill what is left and delete the group. Idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} limit={self.limit}>"


class Limiter(ABC):
    """Creates groups and reports OOM kills in them. Use as a context manager."""

    kind: str
    reason: str = ""

    def __init__(self) -> None:
        self._groups: list[MemoryGroup] = []
        self._groups_lock = threading.Lock()

    @property
    @abstractmethod
    def events(self) -> EventSource: ...

    @abstractmethod
    def _create(
        self, name: str, limit: int | None, parent: MemoryGroup | None, *, oom_group: bool
    ) -> MemoryGroup: ...

    def create_group(
        self,
        name: str,
        limit: int | None,
        parent: MemoryGroup | None = None,
        *,
        oom_group: bool = False,
    ) -> MemoryGroup:
        """A new group ``name`` (under ``parent``) capped at ``limit`` bytes.

        ``oom_group``: an OOM kill of one member kills them all (v2 ``memory.oom.group``;
        emulated elsewhere by the engine).
        """
        group = self._create(name, limit, parent, oom_group=oom_group)
        with self._groups_lock:
            self._groups.append(group)
        return group

    def groups(self) -> list[MemoryGroup]:
        with self._groups_lock:
            return [g for g in self._groups if not g.removed]

    def close(self) -> None:
        """Remove every group this limiter made (children first) and release descriptors."""
        with self._groups_lock:
            groups = list(reversed(self._groups))
            self._groups.clear()
        errors: list[BaseException] = []
        for group in groups:
            try:
                group.remove()
            except Exception as err:  # keep removing the others; report the first at the end
                errors.append(err)
        self.events.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
