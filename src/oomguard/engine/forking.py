"""The supervisor's side of the fork server (:mod:`oomguard.engine.forkserver`).

:class:`ForkServer` starts the server and asks it for workers; :class:`ForkedProcess` is
what the engine holds for each one, with the part of ``subprocess.Popen`` it uses (``pid``,
``poll``, ``wait``, ``kill``, ``returncode``), so a worker forked by the server and one
spawned as a fresh interpreter are handled alike.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from oomguard.errors import OomguardError

START_TIMEOUT = 60.0  # seconds for the server to import the worker module and say ready
UNKNOWN_CODE = 255  # a worker's exit code when the server that would report it is gone


class ForkServerGone(OomguardError):
    """The fork server died or stopped answering; the engine falls back to spawning."""


def boot(env: dict[str, str]) -> ForkServer | OSError:
    """A fork server, started and not waited for; the error when it cannot even start
    (the engine then spawns fresh interpreters)."""
    try:
        return ForkServer(env)
    except OSError as err:
        return err


class ForkServer:
    """Started by the constructor, which does not wait: the server's interpreter boots while
    the supervisor sets up the rest of the run; :meth:`wait_ready` waits for it."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oomguard.engine.forkserver", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.exits: dict[int, int] = {}  # exit codes reported, by pid
        self.ready = False

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
        try:
            socket.send_fds(self.sock, [request], [conn_fd, slot_fd])
        except OSError as err:
            raise ForkServerGone(f"the fork server is gone: {err}") from err
        deadline = time.monotonic() + START_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            message = self._next(left)
            if message is not None and "pid" in message:
                return message["pid"]
        raise ForkServerGone("the fork server did not fork a worker in time")

    def returncode(self, pid: int, timeout: float | None) -> int | None:
        """``pid``'s exit code, waiting up to ``timeout`` seconds for the report (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while pid not in self.exits:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._next(left) is None and left is not None and left <= 0:
                return None
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
