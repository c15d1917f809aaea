"""Supervising a model backend: start it capped, know when it dies, restart it, wait for health.

A thread owns the backend. It starts the command in a cgroup of its own (through the
same launcher as ``oomguard repro``, so every byte it allocates is charged there), waits
until the health check passes, then watches three things at once: the process's pidfd
(death), the cgroup's OOM events, and a periodic health check. The engine reports worker
errors that mean "the backend is gone" through :meth:`report_failure`. Whatever the cause,
the backend goes ``down``; the engine pauses dispatch and requeues what was in flight as
``backend_failure`` (not counted against the items); the thread restarts the backend after
an exponential backoff with jitter, waits for health, and sets ``ready`` again. More than
``max_restarts`` restarts in ``restart_window`` seconds is a failure of the run: it stops,
with its journal intact, resumable once the backend is fixed.

A backend oomguard did not start (a systemd unit, a container) is restarted by running
``restart_hook`` (an argv list, never a shell), then the same health wait.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from oomguard.backends.config import BackendConfig
from oomguard.errors import BackendFailed
from oomguard.limits.base import Limiter, MemoryGroup
from oomguard.safe_files import open_private
from oomguard.wakeup import WakePipe

State = Literal["starting", "ready", "down", "failed", "stopped"]
EVENTS_KEPT = 500  # a bounded history: a 13-hour run restarts its server thousands of times


@dataclass(frozen=True)
class BackendEvent:
    time: float
    event: str  # started | ready | died | oom_killed | unhealthy | reported | restart | failed
    detail: str


def http_healthy(url: str, status: int, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a configured http(s) URL
            return int(response.status) == status
    except urllib.error.HTTPError as err:
        return int(err.code) == status
    except (OSError, ValueError):
        return False


def command_healthy(argv: list[str], timeout: float = 10.0) -> bool:
    try:
        return (
            subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


class BackendSupervisor:
    def __init__(
        self, config: BackendConfig, limiter: Limiter, log_dir: os.PathLike[str] | str
    ) -> None:
        config.validate()
        self.config = config
        self.limiter = limiter
        self.log_dir = os.fspath(log_dir)
        self.state: State = "stopped"
        self.restarts = 0
        self.oom_kills = 0
        # the last EVENTS_KEPT events, each with its sequence number (events_since)
        self.events: deque[tuple[int, BackendEvent]] = deque(maxlen=EVENTS_KEPT)
        self._next_seq = 0
        self.failure: str | None = None
        self.group: MemoryGroup | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._restart_times: deque[float] = deque()
        self._lock = threading.Lock()
        self._wake = WakePipe()  # wakes the watching thread (a report, a stop)
        self._stop = threading.Event()
        self._reported = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oomguard-backend", daemon=True)
        self._changed = WakePipe()  # wakes the engine: the state changed

    # ------------------------------------------------------------- for the engine

    def fileno(self) -> int:
        """Readable when the state changed (the engine waits on it with everything else)."""
        return self._changed.fileno()

    def drain(self) -> None:
        self._changed.drain()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start(self) -> None:
        """Start (or adopt) the backend and wait until it is healthy; then watch it."""
        self._start_once(first=True)
        self._thread.start()

    def report_failure(self, detail: str) -> None:
        """A worker saw an error that means the backend is gone: check it now."""
        self._note("reported", detail[:300])
        self._reported.set()
        self._poke()

    def close(self) -> None:
        self._stop.set()
        self._poke()
        if self._thread.is_alive():
            self._thread.join(timeout=self.config.grace + 10)
        self._stop_process()
        if self.group is not None:
            self.group.remove()
            self.group = None
        self._set_state("stopped")
        self._wake.close()
        self._changed.close()

    # ------------------------------------------------------------- the thread

    def _poke(self) -> None:
        self._wake.wake()

    def _note(self, event: str, detail: str = "") -> None:
        with self._lock:
            self.events.append((self._next_seq, BackendEvent(time.time(), event, detail)))
            self._next_seq += 1

    def _set_state(self, state: State) -> None:
        self.state = state
        self._changed.wake()

    def _healthy(self) -> bool:
        if self.config.health_url is not None:
            return http_healthy(self.config.health_url, self.config.health_status)
        assert self.config.health_command is not None
        return command_healthy(self.config.health_command)

    def _launch(self) -> None:
        config = self.config
        assert config.command is not None
        if self.group is None:
            self.group = self.limiter.create_group("backend", config.memory_bytes)
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **config.env}
        log = open_private(Path(self.log_dir) / "backend.log", "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "oomguard.repro.launch", str(read_fd), *config.command],
                pass_fds=(read_fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        finally:
            log.close()
            os.close(read_fd)
        self.group.add_pid(self.process.pid)
        os.close(write_fd)
        self._note("started", f"pid {self.process.pid}")

    def _start_once(self, first: bool = False) -> None:
        self._set_state("starting")
        if self.config.command is not None:
            self._launch()
        elif not first:
            hook = self.config.restart_hook
            assert hook is not None
            try:
                result = subprocess.run(
                    hook, capture_output=True, timeout=self.config.hook_timeout, check=False
                )
                self._note("restart_hook", f"exit {result.returncode}")
            except (OSError, subprocess.TimeoutExpired) as err:
                self._note("restart_hook", f"failed: {err}")
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout
        delay = 0.05
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.process is not None and self.process.poll() is not None:
                raise BackendFailed(
                    f"the backend exited with code {self.process.returncode} before it was ready"
                )
            if self._healthy():
                self._note("ready")
                self._set_state("ready")
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        if not self._stop.is_set():
            raise BackendFailed(f"the backend was not healthy within {self.config.ready_timeout} s")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                cause = self._watch()
                if cause is None or self._stop.is_set():
                    return
                self._set_state("down")
                self._restart(cause)
        except BackendFailed as err:
            self.failure = str(err)
            self._note("failed", str(err))
            self._set_state("failed")

    def _watch(self) -> str | None:
        """Block until the backend is down; returns why."""
        pidfd = os.pidfd_open(self.process.pid) if self.process is not None else None
        failures = 0
        try:
            while not self._stop.is_set():
                watched: list[Any] = [self._wake.fileno()]
                if pidfd is not None:
                    watched.append(pidfd)
                ready, _, _ = select.select(watched, [], [], self.config.health_interval)
                if self._stop.is_set():
                    return None
                if self._wake.fileno() in ready:
                    self._wake.drain()
                if pidfd is not None and pidfd in ready:
                    assert self.process is not None
                    self.process.wait()
                    return self._death_cause()
                if self._reported.is_set() or not ready:
                    self._reported.clear()
                    if self._healthy():
                        failures = 0
                        continue
                    failures += 1
                    if failures >= self.config.unhealthy_after or self.process is None:
                        self._note("unhealthy", f"{failures} failed health checks")
                        return "unhealthy"
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return None

    def _death_cause(self) -> str:
        assert self.process is not None
        code = self.process.returncode
        killed = False
        if self.group is not None:
            try:
                killed = self.group.read().oom_kill > self.oom_kills
            except OSError:
                killed = False
        if killed:
            self.oom_kills += 1
            self._note(
                "oom_killed",
                f"pid {self.process.pid} killed by the kernel in its {self.config.memory} byte cap",
            )
            return "oom_killed"
        self._note("died", f"exit {code}")
        return "died"

    def _restart(self, cause: str) -> None:
        now = time.monotonic()
        window = self.config.restart_window
        while self._restart_times and now - self._restart_times[0] > window:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.config.max_restarts:
            raise BackendFailed(
                f"the backend went down ({cause}) more than {self.config.max_restarts} times in "
                f"{window:.0f} s; the run stops here, its journal intact: fix the backend and resume"
            )
        self._restart_times.append(now)
        self._stop_process()
        backoff = min(
            self.config.backoff_max,
            self.config.backoff_initial * 2 ** (len(self._restart_times) - 1),
        )
        backoff *= 1 + random.uniform(-self.config.jitter, self.config.jitter)  # noqa: S311 - spreading restarts
        self._note("restart", f"after {cause}, in {backoff:.2f} s")
        if self._stop.wait(backoff):
            return
        self.restarts += 1
        self._start_once()

    def _stop_process(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, self.config.stop_signal)
                process.wait(timeout=self.config.grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        if self.group is not None:
            self.group.kill_all()
        self.process = None

    def recent_events(self) -> list[dict[str, Any]]:
        """The events kept (the last ``EVENTS_KEPT``), oldest first."""
        return self.events_since(0)[0]

    def events_since(self, seq: int) -> tuple[list[dict[str, Any]], int]:
        """The events numbered ``seq`` and later (those still kept), and the number to ask
        from next time: a count of events seen would stop working once the history is full."""
        with self._lock:
            events = [
                {"time": e.time, "event": f"backend_{e.event}", "detail": e.detail}
                for number, e in self.events
                if number >= seq
            ]
            return events, self._next_seq
