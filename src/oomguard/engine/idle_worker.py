"""What an idle worker holds: measured, not guessed, so a cap too small is one line.

A worker that has loaded the user's function and waits for its first batch already holds
its share of the cap (the function's imports: a PDF library, a model). A cap below that
can run nothing: every worker is OOM-killed while it loads. The figure is measured from a
real worker, forked by the job's fork server: the first worker of a job that loads is
read as it says ready; when none can load under the cap, one probe worker is started in a
cgroup of its own, capped at :func:`probe_ceiling`, and read once it is ready. Either
way the figure is kept per fork server and function, so the next job of this process on
the same server is refused at once, before any worker starts.
"""

from __future__ import annotations

import weakref
from multiprocessing.connection import wait
from typing import Any

from oomguard.engine import protocol
from oomguard.engine.fork_server import ForkServer
from oomguard.engine.handles import WorkerHandle, close_worker, start_worker
from oomguard.errors import ConfigError, ForkServerGone
from oomguard.limits.base import Limiter
from oomguard.sizes import format_size

PROBE_TIMEOUT = 120.0  # seconds for the probe worker to load the function
PROBE_HEADROOM = 512 * 1024 * 1024  # the probe may hold this much over the cap, at least

# per fork server: function spec (and import path) -> bytes an idle worker holds
_measured: weakref.WeakKeyDictionary[ForkServer, dict[str, int]] = weakref.WeakKeyDictionary()


def _key(spec: dict[str, Any]) -> str:
    return f"{spec['function']}\0{spec.get('sys_path', [''])[0]}"


def remember(server: ForkServer | None, spec: dict[str, Any], held: int) -> None:
    """Keep what an idle worker of ``spec`` forked by ``server`` was seen to hold."""
    if server is not None and held > 0:
        _measured.setdefault(server, {})[_key(spec)] = held


def known(server: ForkServer | None, spec: dict[str, Any]) -> int | None:
    """What an idle worker of ``spec`` forked by ``server`` holds, if it was measured."""
    if server is None:
        return None
    return _measured.get(server, {}).get(_key(spec))


def too_small(cap: int, held: int, *, at_least: bool = False) -> ConfigError:
    """The one-line refusal of a cap below what an idle worker holds."""
    more = "more than " if at_least else "~"
    return ConfigError(
        f"the cap of {format_size(cap)} is below an idle worker's {more}{format_size(held)} "
        "(measured: its interpreter and the function's imports); give --memory more"
    )


def check_cap(cap: int, server: ForkServer | None, spec: dict[str, Any]) -> None:
    """Refuse ``cap`` at once where an idle worker was already measured to need more."""
    held = known(server, spec)
    if held is not None and held >= cap:
        raise too_small(cap, held)


def probe_ceiling(cap: int) -> int:
    """The probe's own cap: room to measure a worker well over ``cap``, never unbounded."""
    return max(2 * cap, cap + PROBE_HEADROOM)


def measure(
    limiter: Limiter,
    server: ForkServer | None,
    spec: dict[str, Any],
    env: dict[str, str],
    ceiling: int,
) -> tuple[int, bool] | None:
    """Start one worker in a probe cgroup capped at ``ceiling``, let it load the function
    and read its working set: ``(bytes, False)``; ``(ceiling, True)`` when it was
    OOM-killed at the ceiling (an idle worker needs more); None when it could not be
    told (the function does not load at all, or no worker starts)."""
    probe = limiter.create_group("probe", ceiling)
    handle: WorkerHandle | None = None
    try:
        try:
            handle = start_worker(limiter, probe, 0, 0, spec, None, env, server)
        except (ForkServerGone, OSError):
            return None
        ready = _wait_ready(handle)
        if ready:
            held = handle.group.working_set()
            remember(server, spec, held)
            return held, False
        killed = handle.group.read().oom_kill > handle.oom_baseline
        return (ceiling, True) if killed else None
    finally:
        if handle is not None:
            try:
                handle.conn.send((protocol.STOP,))
            except OSError:
                pass
            close_worker(handle)
        probe.remove()


def _wait_ready(handle: WorkerHandle) -> bool:
    """Whether the probe worker said ready (False: it died, or said fatal)."""
    while handle.proc.poll() is None:
        if not wait([handle.conn, handle.pidfd], timeout=PROBE_TIMEOUT):
            return False
        try:
            while handle.conn.poll(0):
                message = handle.conn.recv()
                if message[0] == protocol.READY:
                    return True
                if message[0] == protocol.FATAL:
                    return False
        except (EOFError, OSError):
            handle.proc.wait()
            return False
    return False
