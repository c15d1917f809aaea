"""OOM-kill notification from cgroups without polling.

v1: an eventfd registered through ``cgroup.event_control`` on ``memory.oom_control``; the
kernel signals it when the cgroup (or an ancestor) goes under OOM. v2: inotify on
``memory.events``, which the kernel marks modified when any of its counters moves.

Either way the wake-up only says "look now": :meth:`CgroupEventSource.drain` then reads
every watched group's ``oom_kill`` counter and reports the ones that rose. On v1 the
eventfd fires as the OOM starts, a moment before the victim is chosen, so a wake-up
without a risen counter re-reads it for up to :data:`SETTLE_SECONDS`.

inotify is reached through ctypes because the standard library has no binding and the
three calls we need do not justify a dependency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomguard.errors import CgroupError
from oomguard.limits.base import EventSource, OomEvent
from oomguard.memory.cgroups import parse_flat_keyed
from oomguard.wakeup import drain

SETTLE_SECONDS = 0.05
_SETTLE_STEP = 0.002

IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


class _Inotify:
    """The three inotify calls, through libc."""

    def __init__(self) -> None:
        libc_name = ctypes.util.find_library("c") or "libc.so.6"
        self._libc = ctypes.CDLL(libc_name, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: Path, mask: int = IN_MODIFY) -> int:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails harmlessly once the file is gone

    def discard_pending(self) -> None:
        drain(self.fd)

    def close(self) -> None:
        # once only: a second close() could close a descriptor the number was reused for
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


@dataclass
class _Watch:
    name: str
    path: Path
    counter_file: Path
    last_count: int
    fd: int | None = None  # v1: the eventfd
    wd: int | None = None  # v2: the inotify watch


def read_oom_kill(counter_file: Path) -> int:
    """``oom_kill`` from ``memory.oom_control`` (v1) or ``memory.events`` (v2); 0 if gone."""
    try:
        return parse_flat_keyed(counter_file.read_text()).get("oom_kill", 0)
    except OSError:
        return 0


class CgroupEventSource(EventSource):
    """Watches cgroups for OOM kills; one epoll descriptor to wait on."""

    def __init__(self, version: Literal["v1", "v2"]) -> None:
        self.version = version
        self._epoll = select.epoll()
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._inotify: _Inotify | None = None
        self._settle_until: float | None = None  # monotonic: re-scan until then
        if version == "v2":
            self._inotify = _Inotify()
            self._epoll.register(self._inotify.fd, select.EPOLLIN)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def watch(self, name: str, path: Path) -> None:
        counter_file = path / ("memory.oom_control" if self.version == "v1" else "memory.events")
        watch = _Watch(name, path, counter_file, read_oom_kill(counter_file))
        try:
            if self.version == "v1":
                watch.fd = self._register_eventfd(path)
                self._epoll.register(watch.fd, select.EPOLLIN)
            else:
                assert self._inotify is not None
                watch.wd = self._inotify.add_watch(counter_file)
        except OSError as err:
            raise CgroupError(
                f"cannot watch {counter_file} for OOM kills: {err}", str(path)
            ) from err
        with self._lock:
            self._watches[name] = watch

    @staticmethod
    def _register_eventfd(path: Path) -> int:
        event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        control_fd = os.open(path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(path / "cgroup.event_control", "w") as control:
                control.write(f"{event_fd} {control_fd}")
        except OSError:
            os.close(event_fd)
            raise
        finally:
            # the kernel holds its own reference to the file from here on
            os.close(control_fd)
        return event_fd

    def unwatch(self, name: str) -> None:
        with self._lock:
            watch = self._watches.pop(name, None)
        if watch is None:
            return
        if watch.fd is not None:
            try:
                self._epoll.unregister(watch.fd)
            except (OSError, ValueError):
                pass
            os.close(watch.fd)  # POLLHUP makes the kernel drop the registration
        if watch.wd is not None and self._inotify is not None:
            self._inotify.rm_watch(watch.wd)

    def _consume_wakeups(self) -> bool:
        woke = False
        for fd, _mask in self._epoll.poll(0):
            woke = True
            if self._inotify is not None and fd == self._inotify.fd:
                self._inotify.discard_pending()
            else:
                try:
                    os.eventfd_read(fd)
                except (BlockingIOError, OSError):
                    pass
        return woke

    def _scan(self) -> list[OomEvent]:
        events: list[OomEvent] = []
        now = time.time()
        with self._lock:
            for watch in self._watches.values():
                count = read_oom_kill(watch.counter_file)
                if count > watch.last_count:
                    watch.last_count = count
                    source: Literal["eventfd", "inotify"] = (
                        "eventfd" if self.version == "v1" else "inotify"
                    )
                    events.append(OomEvent(watch.name, count, now, source, path=str(watch.path)))
        return events

    def drain(self) -> list[OomEvent]:
        woke = self._consume_wakeups()
        if not woke and self._settle_until is None:
            return []  # counters only move with a wake-up: no file to read on the hot path
        now = time.monotonic()
        events = self._scan()
        if events:
            self._settle_until = None
        elif woke:
            # v1 signals as the OOM starts; the kill (if any) follows within milliseconds:
            # look again (settle_timeout) rather than block the caller's loop
            self._settle_until = now + SETTLE_SECONDS
        elif self._settle_until is not None and now >= self._settle_until:
            self._settle_until = None  # no kill came of it
        return events

    def settle_timeout(self) -> float | None:
        return None if self._settle_until is None else _SETTLE_STEP

    def close(self) -> None:
        """Idempotent: a limiter closed after an error is often closed again on the way out."""
        for name in list(self._watches):
            self.unwatch(name)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._epoll.close()
