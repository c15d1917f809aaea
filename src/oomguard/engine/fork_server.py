"""The supervisor's side of the fork server (:mod:`oomguard.engine.fork_server_main`).

:class:`ForkServer` starts the server and asks it for workers; :class:`ForkedProcess` is
what the engine holds for each one, with the part of ``subprocess.Popen`` it uses (``pid``,
``poll``, ``wait``, ``kill``, ``returncode``), so a worker forked by the server and one
spawned as a fresh interpreter are handled alike.

A server outlives its run: :func:`release` keeps it, idle, for the next job this process
starts in the same environment and directory, which then skips the server's interpreter
start (tens of milliseconds, more where ``site`` is busy), as loky keeps its workers for
the next call. An idle server is closed after :data:`IDLE_SECONDS`, when the process
exits, and never reused by a forked child of the process.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from oomguard.errors import ForkServerGone

START_TIMEOUT = 60.0  # seconds for the server to import the worker module and say ready
UNKNOWN_CODE = 255  # a worker's exit code when the server that would report it is gone
IDLE_SECONDS = 300.0  # an idle server kept for the next job is closed after this (loky's 300 s)


def boot(env: dict[str, str]) -> ForkServer | OSError:
    """A fork server: the idle one an earlier job left, when it was started in this
    environment (``env`` over ``os.environ``) and directory; else one started now and not
    waited for. The error when none can even start (the engine then spawns fresh
    interpreters)."""
    server = _take_idle()
    if server is not None:
        if server.fits(env):
            return server
        server.close()
    try:
        return ForkServer(env)
    except OSError as err:
        return err


class _Idle:
    """The one idle server kept for the next job (under ``lock``), with its closing timer."""

    lock = threading.Lock()
    server: ForkServer | None = None
    timer: threading.Timer | None = None


def _take_idle() -> ForkServer | None:
    with _Idle.lock:
        server, _Idle.server = _Idle.server, None
        if _Idle.timer is not None:
            _Idle.timer.cancel()
            _Idle.timer = None
    return server


def release(server: ForkServer) -> None:
    """A run is over with ``server``: keep it for the next job when it is healthy and none
    of its workers is left (an exit report still to come would confuse the next run), else
    close it. Kept, it is closed after ``IDLE_SECONDS`` unless a job takes it first."""
    if server.reusable():
        with _Idle.lock:
            if _Idle.server is None:
                _Idle.server = server
                _Idle.timer = threading.Timer(IDLE_SECONDS, _close_if_idle, (server,))
                _Idle.timer.daemon = True
                _Idle.timer.start()
                return
    server.close()


def _close_if_idle(server: ForkServer) -> None:
    with _Idle.lock:
        if _Idle.server is not server:
            return  # a job took it meanwhile
        _Idle.server = _Idle.timer = None
    server.close()


def idle_pid() -> int | None:
    """The pid of the idle server kept for the next job, if one is kept."""
    with _Idle.lock:
        return _Idle.server.pid if _Idle.server is not None else None


def close_idle() -> None:
    """Close the idle server, if one is kept (at exit; a caller that wants no child left)."""
    server = _take_idle()
    if server is not None:
        server.close()


def _forget_in_child() -> None:
    """In a forked child of this process: the idle server is the parent's, never ours.
    Only our copy of its socket is closed (the server sees no end of input)."""
    if _Idle.server is not None:
        _Idle.server.sock.close()
    _Idle.server = _Idle.timer = None
    _Idle.lock = threading.Lock()


atexit.register(close_idle)
os.register_at_fork(after_in_child=_forget_in_child)


class ForkServer:
    """Started by the constructor, which does not wait: the server's interpreter boots while
    the supervisor sets up the rest of the run; :meth:`wait_ready` waits for it."""

    def __init__(self, env: dict[str, str]) -> None:
        # what its workers inherit, to tell whether a later job may use it
        self.environ = {**os.environ, **env}
        self.cwd = os.getcwd()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-m", "oomguard.engine.fork_server_main", str(theirs.fileno())]
        if threading.current_thread() is threading.main_thread():
            # it dies with this process, even by SIGKILL; not when started by another thread:
            # the kernel's signal comes when that thread ends, and a kept server outlives it
            argv += ["--die-with", str(os.getpid())]
        try:
            self.proc = subprocess.Popen(
                argv,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=self.environ,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.exits: dict[int, int] = {}  # exit codes reported, by pid
        self.live: set[int] = set()  # workers forked whose exit code nobody collected yet
        self.ready = False
        # one reader of the socket at a time: a node engine (oomguard.dask.node) spawns and
        # polls its workers from several threads, and a "pid" reply read by the wrong one
        # would be lost
        self._lock = threading.RLock()

    def fits(self, env: dict[str, str]) -> bool:
        """Whether a job that would start a server with ``env`` may use this one: the same
        environment and working directory, and the server still there."""
        return (
            self.environ == {**os.environ, **env}
            and self.cwd == os.getcwd()
            and self.proc.poll() is None
        )

    def reusable(self) -> bool:
        """Running, its socket open, and every worker it forked reaped and accounted for."""
        return self.sock.fileno() != -1 and not self.live and self.proc.poll() is None

    def wait_ready(self) -> None:
        """Wait for the server's ``ready`` (it has imported the worker module)."""
        if self.ready:
            return
        try:
            ready = self._next(START_TIMEOUT)
        except ForkServerGone:
            self.close()
            raise
        if ready is None or "ready" not in ready:
            self.close()
            raise ForkServerGone(f"the fork server did not start within {START_TIMEOUT:.0f} s")
        self.ready = True

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _next(self, timeout: float | None) -> dict[str, int] | None:
        """The next message (exit reports are filed on the way), or None at the timeout."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        try:
            data = self.sock.recv(256)
        except OSError as err:
            raise ForkServerGone(f"the fork server is gone: {err}") from err
        if not data:
            raise ForkServerGone("the fork server is gone")
        message: dict[str, int] = json.loads(data)
        if "exit" in message:
            self.exits[message["exit"]] = message["code"]
        return message

    def spawn(self, conn_fd: int, slot_fd: int, join: str | None = None) -> int:
        """Fork a worker holding these two descriptors; returns its pid. With ``join`` (a
        cgroup.procs path) the worker moves itself into that cgroup before anything runs."""
        request = b"spawn" + (b"\0" + os.fsencode(join) if join else b"")
        with self._lock:
            return self._spawn(request, conn_fd, slot_fd)

    def _spawn(self, request: bytes, conn_fd: int, slot_fd: int) -> int:
        try:
            socket.send_fds(self.sock, [request], [conn_fd, slot_fd])
        except OSError as err:
            raise ForkServerGone(f"the fork server is gone: {err}") from err
        deadline = time.monotonic() + START_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            message = self._next(left)
            if message is not None and "pid" in message:
                self.live.add(message["pid"])
                return message["pid"]
        raise ForkServerGone("the fork server did not fork a worker in time")

    def returncode(self, pid: int, timeout: float | None) -> int | None:
        """``pid``'s exit code, waiting up to ``timeout`` seconds for the report (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            return self._returncode(pid, deadline)

    def _returncode(self, pid: int, deadline: float | None) -> int | None:
        while pid not in self.exits:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._next(left) is None and left is not None and left <= 0:
                return None
        self.live.discard(pid)
        return self.exits.pop(pid)

    def close(self) -> None:
        self.sock.close()  # end of input: the server returns
        if self.proc.returncode is not None:
            return
        # waited for through a pidfd: Popen.wait(timeout) polls with sleeps
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except OSError:
            pidfd = None  # already reaped
        if pidfd is not None:
            try:
                ended, _, _ = select.select([pidfd], [], [], 5.0)
            finally:
                os.close(pidfd)
            if not ended:
                self.proc.kill()
        self.proc.wait()


class ForkedProcess:
    """A worker forked by the server, through the part of Popen's interface the engine uses."""

    def __init__(self, server: ForkServer, pid: int, pidfd: int) -> None:
        self.server = server
        self.pid = pid
        self.pidfd = pidfd
        self.returncode: int | None = None

    def _code(self, timeout: float | None) -> int | None:
        try:
            return self.server.returncode(self.pid, timeout)
        except ForkServerGone:
            # no one left to report the code: its pidfd still says whether it has ended
            ended, _, _ = select.select([self.pidfd], [], [], timeout)
            return UNKNOWN_CODE if ended else None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._code(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._code(timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is not None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass  # already gone
